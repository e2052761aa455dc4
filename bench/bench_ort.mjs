// bench_ort.mjs — ONNX Runtime peer of bench_cnn: the same model, the same measurement.
//
//   node bench_ort.mjs [--threads N] [--iters K] [--warmup W] MODEL.onnx BATCH
//
// MODEL.onnx comes from `prepare.py onnx MODEL_DIR BATCH MODEL.onnx`, which also
// writes MODEL.json (model name, fixed input shape, FLOPs per sample) beside it.
// Prints one line in bench_cnn's format, with "ort" in place of "modeld":
//   ort <name> batch=B median_ms=.. p10_ms=.. images_per_s=.. gflops=.. peak_pct=..
//
// Set up as docs/PERFORMANCE.md describes: npm onnxruntime-node 1.30.0
// (its bundled CPU library), installed with ONNXRUNTIME_NODE_INSTALL=skip into a
// scratch folder outside the repository (MODELD_ORT_DIR, default /tmp/modeld-ort;
// run.sh installs it there), and a session with intraOpNumThreads N,
// interOpNumThreads 1, graphOptimizationLevel 'all'.  The input tensor is built
// once; each timed iteration is one awaited session.run(), so the figure includes
// the binding's per-call cost (tens of microseconds), as a Node server would pay.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';

const CORE_PEAK_GFLOPS = 116.5; // as bench_cnn: 233 GFLOP/s at 2 threads
const CORES = 2;
const AUTO_SECONDS = 2.0;
const MIN_ITERS = 5;
const MAX_ITERS = 2000;

function usage() {
  console.error('usage: node bench_ort.mjs [--threads N] [--iters K] [--warmup W] MODEL.onnx BATCH');
  process.exit(2);
}

function parseIntArg(s, what, lo) {
  const v = Number(s);
  if (!Number.isInteger(v) || v < lo) {
    console.error(`bench_ort: ${what} must be an integer >= ${lo}, got '${s}'`);
    process.exit(2);
  }
  return v;
}

// Nearest rank, as bench_cnn computes it.
function percentile(sorted, q) {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

// A seeded N(0,1) stream (mulberry32 + Box-Muller): fixed input, every run.
function normalStream(seed) {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(Math.max(uniform(), 1e-300))) *
    Math.cos(2 * Math.PI * uniform());
}

const args = process.argv.slice(2);
let threads = 2, iters = 0, warmup = 3;
const pos = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--threads' && i + 1 < args.length) threads = parseIntArg(args[++i], '--threads', 1);
  else if (args[i] === '--iters' && i + 1 < args.length) iters = parseIntArg(args[++i], '--iters', 1);
  else if (args[i] === '--warmup' && i + 1 < args.length) warmup = parseIntArg(args[++i], '--warmup', 0);
  else if (args[i].startsWith('-')) usage();
  else pos.push(args[i]);
}
if (pos.length !== 2) usage();
const [onnxPath, batchArg] = pos;
const batch = parseIntArg(batchArg, 'BATCH', 1);

const meta = JSON.parse(readFileSync(onnxPath.replace(/\.onnx$/, '') + '.json', 'utf8'));
if (meta.batch !== batch) {
  console.error(`bench_ort: ${onnxPath} was exported for batch ${meta.batch}, not ${batch}`);
  process.exit(2);
}

const ortDir = process.env.MODELD_ORT_DIR || '/tmp/modeld-ort';
const ort = createRequire(path.join(path.resolve(ortDir), 'package.json'))('onnxruntime-node');

const session = await ort.InferenceSession.create(onnxPath, {
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
  graphOptimizationLevel: 'all',
});

const numel = meta.shape.reduce((a, b) => a * b, 1);
const data = new Float32Array(numel);
const normal = normalStream(12345);
for (let i = 0; i < numel; i++) data[i] = normal();
const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', data, meta.shape) };

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
let last = 0;
for (let i = 0; i < Math.max(warmup, iters === 0 ? 1 : 0); i++) {
  const t0 = nowMs();
  await session.run(feeds);
  last = nowMs() - t0;
}
if (iters === 0)
  iters = Math.floor(Math.min(MAX_ITERS, Math.max(MIN_ITERS, AUTO_SECONDS * 1e3 / Math.max(last, 1e-3))));

const ms = [];
for (let i = 0; i < iters; i++) {
  const t0 = nowMs();
  await session.run(feeds);
  ms.push(nowMs() - t0);
}
ms.sort((a, b) => a - b);
const median = percentile(ms, 0.5);
const gflops = meta.flops_per_sample * batch / (median * 1e6);
const peak = CORE_PEAK_GFLOPS * Math.min(threads, CORES);
console.log(`ort ${meta.name} batch=${batch} median_ms=${median.toFixed(4)} ` +
  `p10_ms=${percentile(ms, 0.1).toFixed(4)} images_per_s=${(batch * 1e3 / median).toFixed(1)} ` +
  `gflops=${gflops.toFixed(2)} peak_pct=${(100 * gflops / peak).toFixed(1)} ` +
  `iters=${iters} threads=${threads}`);
await session.release();
