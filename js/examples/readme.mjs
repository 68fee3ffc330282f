import { loadModel } from 'hybrid-onnx';
const model = await loadModel('models/hybrid-tiny', { variant: 'int8', threads: 1 });
for await (const piece of model.stream('ROMEO:', { maxTokens: 100, temperature: 0.8, seed: 1 })) process.stdout.write(piece);
console.log('\nbpc', (await model.evaluate('To be, or not to be, that is the question.\n')).bpc);
