"""The hybrid runtime: run an exported model directory with numpy + onnxruntime only (no torch).

    from hybrid.runtime import load_model
    model = load_model("model_dir", variant="int8", threads=4)
    print(model.evaluate(text)["bpc"])
    for piece in model.stream("ROMEO:", max_tokens=200, temperature=0.8, seed=1):
        print(piece, end="", flush=True)

Names are imported lazily, so `import hybrid.runtime.errors` (done by every command) stays cheap.
"""

from hybrid.runtime.errors import HybridError

__all__ = ["HybridError", "Model", "Session", "load_model", "open_model_dir"]


def __getattr__(name):
    if name in ("Model", "load_model"):
        from hybrid.runtime import model

        return getattr(model, name)
    if name == "Session":
        from hybrid.runtime.session import Session

        return Session
    if name == "open_model_dir":
        from hybrid.runtime.modeldir import open_model_dir

        return open_model_dir
    raise AttributeError(f"module 'hybrid.runtime' has no attribute {name!r}")
