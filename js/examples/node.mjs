import { loadModel } from 'hybrid-onnx';

const model = await loadModel(process.argv[2] ?? 'models/hybrid-tiny', { variant: 'int8', threads: 1 });

for await (const piece of model.stream('ROMEO:', { maxTokens: 100, temperature: 0.8, topK: 40, seed: 1, stop: ['\n\n'] })) {
  process.stdout.write(piece);                        // text as it is generated
}

const chat = model.session();                          // a stateful stream: the state carries
await chat.feed('JULIET:\n');
await chat.feed('Wherefore art thou');
const reply = await chat.generate({ maxTokens: 60, temperature: 0.7, seed: 2 });
const logprobs = await chat.nextTokenLogprobs();       // Float64Array over the vocabulary

const { bpc, tokens } = await model.evaluate('To be, or not to be, that is the question.\n');
console.log(`\n${JSON.stringify(reply)}\n${bpc.toFixed(3)} bits per character over ${tokens} tokens; ${logprobs.length} logprobs`);
