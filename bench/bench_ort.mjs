// bench_ort.mjs — ONNX Runtime peer of bench_engine: the same model, the same measurement.
//
//   node bench_ort.mjs [--threads N] [--iters K] [--warmup W] MODEL.onnx BATCH [SEQ]
//
// MODEL.onnx comes from `prepare.py onnx MODEL_DIR BATCH MODEL.onnx`, which also
// writes MODEL.json (model name, fixed input shape, FLOPs per sample) beside it,
// or for a BERT from `prepare.py onnx-bert MODEL_DIR BATCH SEQ MODEL.onnx` (its
// MODEL.json has kind "bert", seq and the int64 inputs).  For a GAN generator
// directory `prepare.py onnx` writes kind "gan", num_classes and the inputs: z
// (B, latent_dim) float32, fed N(0,1), and for a conditional generator classes (B)
// int64, fed i % num_classes.
// Prints one line in bench_engine's format, with "ort" in place of "modeld":
//   ort <name> batch=B median_ms=.. p10_ms=.. images_per_s=.. gflops=.. peak_pct=..
// and for a BERT " seq=T" at the end (images_per_s then counts sequences).
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

const CORE_PEAK_GFLOPS = 116.5; // as bench_engine: 233 GFLOP/s at 2 threads
const CORES = 2;
const AUTO_SECONDS = 2.0;
const MIN_ITERS = 5;
const MAX_ITERS = 2000;

function usage() {
  console.error('usage: node bench_ort.mjs [--threads N] [--iters K] [--warmup W] MODEL.onnx BATCH [SEQ]');
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

// Nearest rank, as bench_engine computes it.
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
if (pos.length !== 2 && pos.length !== 3) usage();
const [onnxPath, batchArg, seqArg] = pos;
const batch = parseIntArg(batchArg, 'BATCH', 1);

const meta = JSON.parse(readFileSync(onnxPath.replace(/\.onnx$/, '') + '.json', 'utf8'));
const isBert = meta.kind === 'bert';
if (meta.batch !== batch) {
  console.error(`bench_ort: ${onnxPath} was exported for batch ${meta.batch}, not ${batch}`);
  process.exit(2);
}
if (isBert && (seqArg === undefined || parseIntArg(seqArg, 'SEQ', 1) !== meta.seq)) {
  console.error(`bench_ort: ${onnxPath} was exported for seq ${meta.seq}, not ${seqArg ?? '(none)'}`);
  process.exit(2);
}
if (!isBert && seqArg !== undefined) usage();

const ortDir = process.env.MODELD_ORT_DIR || '/tmp/modeld-ort';
const ort = createRequire(path.join(path.resolve(ortDir), 'package.json'))('onnxruntime-node');

const session = await ort.InferenceSession.create(onnxPath, {
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
  graphOptimizationLevel: 'all',
});

// prepare.py's bert_workload(), restated: [CLS], 1000 + (i*7919 + b*31) % 20000
// at position i of sequence b, [SEP] last, one [MASK] at seq/2
function bertFeeds(seq) {
  const ids = new BigInt64Array(batch * seq);
  const maskPos = new BigInt64Array(batch);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < seq; i++) ids[b * seq + i] = BigInt(1000 + (i * 7919 + b * 31) % 20000);
    ids[b * seq] = 101n;
    ids[b * seq + seq - 1] = 102n;
    ids[b * seq + Math.floor(seq / 2)] = 103n;
    maskPos[b] = BigInt(Math.floor(seq / 2));
  }
  const data = { input_ids: ids, mask_positions: maskPos };
  const feeds = {};
  for (const inp of meta.inputs) feeds[inp.name] = new ort.Tensor('int64', data[inp.name], inp.shape);
  return feeds;
}

function imageFeeds() {
  const numel = meta.shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(numel);
  const normal = normalStream(12345);
  for (let i = 0; i < numel; i++) data[i] = normal();
  return { [session.inputNames[0]]: new ort.Tensor('float32', data, meta.shape) };
}

// prepare.py's gan_workload(), restated: z of N(0,1), class i % num_classes
function ganFeeds() {
  const feeds = {};
  for (const inp of meta.inputs) {
    const numel = inp.shape.reduce((a, b) => a * b, 1);
    if (inp.name === 'z' && inp.dtype === 'float32') {
      const data = new Float32Array(numel);
      const normal = normalStream(12345);
      for (let i = 0; i < numel; i++) data[i] = normal();
      feeds.z = new ort.Tensor('float32', data, inp.shape);
    } else if (inp.name === 'classes' && inp.dtype === 'int64') {
      const data = new BigInt64Array(numel);
      for (let i = 0; i < numel; i++) data[i] = BigInt(i % meta.num_classes);
      feeds.classes = new ort.Tensor('int64', data, inp.shape);
    } else {
      console.error(`bench_ort: unexpected GAN input ${inp.name} (${inp.dtype}) in ${onnxPath}`);
      process.exit(2);
    }
  }
  return feeds;
}

const feeds = isBert ? bertFeeds(meta.seq) : meta.kind === 'gan' ? ganFeeds() : imageFeeds();

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
  `iters=${iters} threads=${threads}` + (isBert ? ` seq=${meta.seq}` : ''));
await session.release();
