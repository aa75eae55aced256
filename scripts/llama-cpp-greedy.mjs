// Greedy ids from llama.cpp itself for a GGUF, through node-llama-cpp's
// prebuilt CPU binary: the peer kvplan's GGUF tests compare with, token for
// token (tests/lit/cli/llama-cpp.test).
//
//   npm install --prefix DIR node-llama-cpp@3
//   KVPLAN_NODE_LLAMA_CPP=DIR node scripts/llama-cpp-greedy.mjs MODEL.gguf ID,ID,... N
//
// Prints the prompt's ids and the N greedy ids after them, space-separated,
// as `kvplan run --print-ids` does. With KVPLAN_LLAMA_CPP_BENCH=1 it times
// the model instead, as `kvplan bench` does: a prompt of 128 ids evaluated,
// then 64 single ids (scripts/bench-moe.sh).
import {pathToFileURL} from "node:url";
import os from "node:os";
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
// One thread a CPU, as kvplan runs: node-llama-cpp's default takes twice
// the cores, and on a small machine its threads then wait on each other.
const context = await model.createContext({contextSize: 256, threads: os.availableParallelism()});
const sequence = context.getSequence();
if (process.env.KVPLAN_LLAMA_CPP_BENCH === "1") {
  const prompt = Array.from({length: 128}, (_, i) => 3 + (i % 250));
  const t0 = performance.now();
  await sequence.evaluateWithoutGeneratingNewTokens(prompt);
  const t1 = performance.now();
  for (let i = 0; i < 64; i++) await sequence.evaluateWithoutGeneratingNewTokens([5 + i]);
  const t2 = performance.now();
  console.log(`llama.cpp prefill ${(128 / ((t1 - t0) / 1000)).toFixed(1)} tokens/s, ` +
              `decode ${(64 / ((t2 - t1) / 1000)).toFixed(2)} tokens/s`);
  process.exit(0);
}
const prompt = ids.split(",").map(Number);
const out = [];
for await (const token of sequence.evaluate(prompt, {temperature: 0})) {
  out.push(token);
  if (out.length >= Number(n)) break;
}
console.log([...prompt, ...out].join(" "));
process.exit(0);
