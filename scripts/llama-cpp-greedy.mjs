// Greedy ids from llama.cpp itself for a GGUF, through node-llama-cpp's
// prebuilt CPU binary: the peer kvplan's GGUF tests compare with, token for
// token (tests/lit/cli/llama-cpp.test).
//
//   npm install --prefix DIR node-llama-cpp@3
//   KVPLAN_NODE_LLAMA_CPP=DIR node scripts/llama-cpp-greedy.mjs MODEL.gguf ID,ID,... N
//
// Prints the prompt's ids and the N greedy ids after them, space-separated,
// as `kvplan run --print-ids` does.
import {pathToFileURL} from "node:url";
import path from "node:path";

const [modelPath, ids, n] = process.argv.slice(2);
const dir = process.env.KVPLAN_NODE_LLAMA_CPP;
if (!modelPath || !ids || !n || !dir) {
  console.error("usage: KVPLAN_NODE_LLAMA_CPP=DIR node llama-cpp-greedy.mjs MODEL.gguf IDS N " +
                "(DIR holds node_modules/node-llama-cpp)");
  process.exit(2);
}
const entry = path.join(dir, "node_modules", "node-llama-cpp", "dist", "index.js");
const {getLlama} = await import(pathToFileURL(entry).href);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize: 256});
const sequence = context.getSequence();
const prompt = ids.split(",").map(Number);
const out = [];
for await (const token of sequence.evaluate(prompt, {temperature: 0})) {
  out.push(token);
  if (out.length >= Number(n)) break;
}
console.log([...prompt, ...out].join(" "));
process.exit(0);
