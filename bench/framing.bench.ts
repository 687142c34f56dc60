/**
 * Framing bench: the item codec and the feed-frame path, each beside its baseline from the same run.
 *
 *   1. Items `{ id, payload: <64-char string> }` encoded and decoded, one at a time and as a feed blob
 *      of 1000 records (and outputs keyed by data, as a word count's, decoded from results blobs), by codec.ts (src/protocol/codec.ts: its own small-item reader and writer, and
 *      msgpackr for anything else; msgpackr alone is shown beside it), @msgpack/msgpack tuned as far as
 *      its options go, and JSON as the reference. Applies the codec rule: codec.ts stays on msgpackr
 *      only while it encodes+decodes items at least 1.5× as fast as @msgpack/msgpack.
 *   2. Loopback TCP: feed frames received as a node receives them (Connection → FrameDecoder →
 *      parseMessage, the blob left as bytes) against raw Bun sockets moving the same bytes unframed.
 *
 * The machine is shared and noisy (the same code's rate moves up to 2× within seconds), so figures are
 * compared only with what was measured next to them: the codec cases run once through mitata's `run()`
 * (printed), then in short interleaved rounds; the TCP modes alternate round by round; every ratio is
 * taken within a round, and the report gives the median of those ratios.
 *
 *   bun run bench framing
 *   env: PCLUSTER_BENCH_ROUNDS (4), PCLUSTER_BENCH_TCP_MB (256), PCLUSTER_BENCH_TCP_ROUNDS (7), PCLUSTER_BENCH_ONLY=codec|tcp
 */
import { decode as msgpackDecodeOnce, encode as msgpackEncodeOnce } from "@msgpack/msgpack";
import { bench, do_not_optimize, group, measure, run } from "mitata";
import { Packr, isNativeAccelerationEnabled } from "msgpackr";
import { loadavg } from "node:os";
import { RecordBatchBuilder } from "../src/protocol/codec.ts";
import { FrameDecoder } from "../src/protocol/frame.ts";
import { parseMessage } from "../src/protocol/messages.ts";
import { RecordReader } from "../src/protocol/record.ts";
import { judgeAim } from "./support/aim.ts";
import { Child, serveCommands } from "./support/child.ts";
import {
  CODECS,
  PAYLOAD_CHARS,
  blobOf,
  checkRoundTrips,
  decodeBlob,
  feedFrame,
  itemsFrom,
  json,
  keyedBlobOf,
  keyedOutputs,
  msgpackTuned,
  msgpackr,
} from "./support/codecs.ts";
import { fmtMBps, fmtRange, fmtRate, fmtRatio, median, pct, table } from "./support/report.ts";
import { TCP_MODES, type TcpMode, type TcpResult, TcpReceiver, framesFor, send } from "./support/tcp.ts";

const BATCH = 1000;
/** Results blobs of keyed outputs read per call of the "decode keyed" cases (see codecCases). */
const KEYED_BLOBS = 16;
const AIM_DECODE_ITEMS_PER_S = 2.5e6;
const AIM_FRAMED_OF_RAW = 0.7;
const CODEC_RULE = 1.5;
/** Interleaved rounds after the printed pass, and the CPU time each case gets in a round. */
const ROUNDS = Number(process.env.PCLUSTER_BENCH_ROUNDS ?? 4);
const ROUND_CPU_NS = 150e6;
const TCP_BYTES = Number(process.env.PCLUSTER_BENCH_TCP_MB ?? 256) * 2 ** 20;
const TCP_WARMUP_BYTES = 32 * 2 ** 20;
const TCP_ROUNDS = Number(process.env.PCLUSTER_BENCH_TCP_ROUNDS ?? 7);
/** Distinct feed frames a sender cycles through (building 256 MB of unique frames takes longer than sending them). */
const FRAME_CYCLE = 8;
const RECEIVE_STREAM_BYTES = 32 * 2 ** 20;
/** What Bun's socket mostly hands over per `data` call on loopback (measured: ≤ 512 KiB). */
const RECEIVE_CHUNK_BYTES = 512 * 1024;
const ONLY = process.env.PCLUSTER_BENCH_ONLY;

// ---- micro-benchmark cases -------------------------------------------------------------------------

type Op =
  | "encode 1"
  | "encode batch"
  | "decode 1"
  | "decode batch"
  | "decode array"
  | "decode multiple"
  | "decode keyed"
  | "receive (CPU)";

interface Case {
  op: Op;
  /** The codec, or for the receive path what is done with the bytes. */
  codec: string;
  /** The case of its group the others are compared to. */
  baseline?: boolean;
  /** Informative: measured in the printed pass only, not in the rounds behind the verdicts. */
  printedOnly?: boolean;
  /** Items handled per call of `fn`. */
  items: number;
  note?: string;
  fn: () => unknown;
}

const keyOf = (c: { op: Op; codec: string }) => `${c.op}|${c.codec}`;

/** Every case, in report order (groups as in GROUPS). */
function codecCases(): Case[] {
  const items = itemsFrom(0, BATCH);
  const one = items[500]!;
  // codec.ts's item options (its packr's and its item unpackr's), for the cases codec.ts has no function for.
  const packr = new Packr({ useRecords: false, encodeUndefinedAsNil: true, int64AsType: "number", copyBuffers: true });
  checkRoundTrips(items, packr);
  const jsonText = JSON.stringify(one);
  // Plain Uint8Arrays for both MessagePack codecs (msgpackr's own output is a Buffer, which it reads faster).
  const packed = new Uint8Array(msgpackr.encode(one));
  const bytes = msgpackTuned.encode(one);
  const array = new Uint8Array(packr.pack(items));
  const backToBack = new Uint8Array(Buffer.concat(items.map((item) => packr.pack(item))));
  const builders = new Map(CODECS.map((codec) => [codec, new RecordBatchBuilder()]));
  const blobs = new Map(CODECS.map((codec) => [codec, blobOf(codec, items)]));
  // Outputs keyed by data: a round reads KEYED_BLOBS different results blobs, so their keys are not
  // only the few of one blob, which the key caches would hold from the first pass on.
  const keyed = keyedOutputs(KEYED_BLOBS * BATCH);
  const keyedBlobs = new Map(
    CODECS.map((codec) => [
      codec,
      Array.from({ length: KEYED_BLOBS }, (_, at) => keyedBlobOf(codec, keyed.slice(at * BATCH, (at + 1) * BATCH))),
    ]),
  );
  const batchNotes = new Map([
    [json, ["stringify + TextEncoder", "TextDecoder + JSON.parse"]],
    [msgpackTuned, ["encodeSharedRef", "reused Decoder"]],
  ]);
  return [
    {
      op: "encode 1",
      codec: "JSON",
      baseline: true,
      items: 1,
      note: "JSON.stringify, string",
      fn: () => do_not_optimize(JSON.stringify(one)),
    },
    {
      op: "encode 1",
      codec: "codec.ts",
      items: 1,
      note: "small-item writer",
      fn: () => do_not_optimize(msgpackr.encode(one)),
    },
    {
      op: "encode 1",
      codec: "codec.ts (msgpackr alone)",
      printedOnly: true,
      items: 1,
      note: "what codec.ts falls back to",
      fn: () => do_not_optimize(packr.pack(one)),
    },
    {
      op: "encode 1",
      codec: "@msgpack/msgpack",
      items: 1,
      note: "reused Encoder",
      fn: () => do_not_optimize(msgpackTuned.encode(one)),
    },
    {
      op: "encode 1",
      codec: "@msgpack/msgpack untuned",
      printedOnly: true,
      items: 1,
      note: "top-level encode()",
      fn: () => do_not_optimize(msgpackEncodeOnce(one)),
    },
    ...CODECS.map(
      (codec): Case => ({
        op: "encode batch",
        codec: codec.name,
        baseline: codec === json,
        items: BATCH,
        note: batchNotes.get(codec)?.[0],
        fn: () => do_not_optimize(feedFrame(codec, builders.get(codec)!, items)),
      }),
    ),
    {
      op: "decode 1",
      codec: "JSON",
      baseline: true,
      items: 1,
      note: "JSON.parse, string",
      fn: () => do_not_optimize(JSON.parse(jsonText)),
    },
    {
      op: "decode 1",
      codec: "codec.ts",
      items: 1,
      note: "small-item reader",
      fn: () => do_not_optimize(msgpackr.decode(packed, 0, packed.length)),
    },
    {
      op: "decode 1",
      codec: "codec.ts (msgpackr alone)",
      printedOnly: true,
      items: 1,
      note: "what codec.ts falls back to",
      fn: () => do_not_optimize(packr.unpack(packed)),
    },
    {
      op: "decode 1",
      codec: "@msgpack/msgpack",
      items: 1,
      note: "reused Decoder",
      fn: () => do_not_optimize(msgpackTuned.decode(bytes, 0, bytes.length)),
    },
    {
      op: "decode 1",
      codec: "@msgpack/msgpack untuned",
      printedOnly: true,
      items: 1,
      note: "top-level decode()",
      fn: () => do_not_optimize(msgpackDecodeOnce(bytes)),
    },
    ...CODECS.map(
      (codec): Case => ({
        op: "decode batch",
        codec: codec.name,
        baseline: codec === json,
        items: BATCH,
        note: batchNotes.get(codec)?.[1],
        fn: () => decodeBlob(codec, blobs.get(codec)!, do_not_optimize),
      }),
    ),
    {
      op: "decode array",
      codec: "codec.ts (msgpackr alone)",
      printedOnly: true,
      items: BATCH,
      note: "one array of 1000, not pcluster's path",
      fn: () => do_not_optimize(packr.unpack(array)),
    },
    {
      op: "decode multiple",
      codec: "codec.ts (msgpackr alone)",
      printedOnly: true,
      items: BATCH,
      note: "unpackMultiple, the 1000 payloads back to back without record headers",
      fn: () => packr.unpackMultiple(backToBack, do_not_optimize),
    },
    ...CODECS.map(
      (codec): Case => ({
        op: "decode keyed",
        codec: codec.name,
        baseline: codec === json,
        items: KEYED_BLOBS * BATCH,
        fn: () => {
          for (const blob of keyedBlobs.get(codec)!) decodeBlob(codec, blob, do_not_optimize);
        },
      }),
    ),
    {
      op: "decode keyed",
      codec: "codec.ts (msgpackr alone)",
      printedOnly: true,
      items: KEYED_BLOBS * BATCH,
      note: "what codec.ts falls back to",
      fn: () => {
        // Its own loop, not decodeBlob: a second decode function through that shared loop would make it
        // polymorphic for the codec.ts case measured in the same process (see PARTS).
        for (const blob of keyedBlobs.get(msgpackr)!) {
          const reader = new RecordReader(blob);
          while (reader.next()) do_not_optimize(packr.unpack(blob.subarray(reader.payloadStart, reader.payloadEnd)));
        }
      },
    },
    ...receivePathCases(),
  ];
}

/** Blob bytes per item in the receive-path stream (to turn its items/s into bytes/s). */
let receiveBytesPerItem = 0;

/**
 * The node's receive path without the socket: feed frames cut into 512 KiB chunks through
 * FrameDecoder + parseMessage, against copying the same chunks once. Free of the socket's noise, it
 * says what framing costs per byte.
 */
function receivePathCases(): Case[] {
  const frames = senderFrames();
  const pieces: Uint8Array[] = [];
  for (let size = 0; size < RECEIVE_STREAM_BYTES; size += pieces.at(-1)!.length) {
    pieces.push(frames[pieces.length % frames.length]!);
  }
  const stream = Buffer.concat(pieces);
  const chunks: Uint8Array[] = [];
  for (let at = 0; at < stream.length; at += RECEIVE_CHUNK_BYTES)
    chunks.push(stream.subarray(at, at + RECEIVE_CHUNK_BYTES));
  const items = pieces.length * BATCH;
  receiveBytesPerItem = stream.length / items;
  const scratch = new Uint8Array(RECEIVE_CHUNK_BYTES);
  const onFrame = (body: Uint8Array): undefined => {
    const message = parseMessage(body);
    if (message.t !== "feed") throw new Error(`unexpected "${message.t}" message`);
  };
  return [
    {
      op: "receive (CPU)",
      codec: "memcpy",
      baseline: true,
      items,
      note: "each chunk copied once",
      fn: () => {
        for (const chunk of chunks) scratch.set(chunk);
      },
    },
    {
      op: "receive (CPU)",
      codec: "FrameDecoder + parseMessage",
      items,
      fn: () => {
        const decoder = new FrameDecoder();
        for (const chunk of chunks) decoder.push(chunk, onFrame);
      },
    },
  ];
}

const GROUPS: ReadonlyArray<[readonly Op[], string]> = [
  [["encode 1"], "encode: one item → bytes"],
  [["encode batch"], `encode: ${BATCH} items → feed frame (RecordBatchBuilder)`],
  [["decode 1"], "decode: bytes → one item"],
  [
    ["decode batch", "decode array", "decode multiple"],
    `decode: feed blob of ${BATCH} records, record by record (RecordReader)`,
  ],
  [
    ["decode keyed"],
    `decode: results blobs of ${BATCH} outputs keyed by data (8 words of a 60 000-word vocabulary each), ×${KEYED_BLOBS}`,
  ],
  [
    ["receive (CPU)"],
    `node receive path, CPU only: ${RECEIVE_STREAM_BYTES / 2 ** 20} MiB of feed frames in ${RECEIVE_CHUNK_BYTES / 1024} KiB chunks`,
  ],
];

// ---- codec runs ----------------------------------------------------------------------------------------

/**
 * Each codec runs in its own process: in one process the shared loops (`feedFrame`, `decodeBlob`,
 * `RecordBatchBuilder.append`) see every codec's types and go polymorphic, and a codec's figure depends
 * on what ran before it (measured over 5 fresh processes each: msgpackr's blob decode 1.05–1.18 M/s
 * after JSON and @msgpack/msgpack, 1.03–2.01 M/s alone). A pcluster process runs one codec.
 */
const PARTS = ["JSON", "codec.ts", "@msgpack/msgpack", "receive"] as const;
type Part = (typeof PARTS)[number];
const partOf = (c: Case): Part =>
  c.op === "receive (CPU)" ? "receive" : (c.codec.replace(/ untuned$| \(msgpackr alone\)$/, "") as Part);

/** One case's figures from one pass or round: items/s at mitata's median sample and at its fastest. */
interface Sample {
  median: number;
  best: number;
}

const sampleOf = (c: Case, stats: { p50: number; min: number }): Sample => ({
  median: (c.items * 1e9) / stats.p50,
  best: (c.items * 1e9) / stats.min,
});

/** In a part's process: `print` runs all its cases through mitata's `run()`; `measure <key>` times one case briefly. */
async function servePart(part: Part): Promise<void> {
  const cases = codecCases().filter((c) => partOf(c) === part);
  await serveCommands(async (command, key) => {
    if (command === "ready") return true;
    if (command === "measure") {
      const c = cases.find((c) => keyOf(c) === key)!;
      return sampleOf(c, await measure(c.fn, { min_cpu_time: ROUND_CPU_NS }));
    }
    const order: Case[] = [];
    for (const [ops, title] of GROUPS) {
      const inGroup = cases.filter((c) => ops.includes(c.op));
      if (inGroup.length === 0) continue;
      group(title, () => {
        for (const c of inGroup) {
          order.push(c);
          bench(c.note === undefined ? c.codec : `${c.codec} (${c.note})`, c.fn);
        }
      });
    }
    const { benchmarks, context } = await run({ format: "mitata" });
    const samples: Record<string, Sample> = {};
    benchmarks.forEach((trial, i) => {
      const stats = trial.runs[0]?.stats;
      if (stats === undefined) throw new Error(`bench "${trial.alias}" failed: ${String(trial.runs[0]?.error)}`);
      samples[keyOf(order[i]!)] = sampleOf(order[i]!, stats);
    });
    return { samples, clockGHz: context.cpu.freq };
  });
}

/** Per case: its samples, index 0 from the printed pass, 1… from the rounds (printed-only cases have one). */
interface CodecResults {
  samples: Map<string, Sample[]>;
  /** Each case's group baseline. */
  baselines: Map<string, string>;
  order: string[];
  /** mitata's estimate of the clock each part's process saw: how much the machine's speed moved. */
  clocks: Map<Part, number>;
}

async function runCodecBenches(): Promise<CodecResults> {
  const cases = codecCases(); // also checks that every candidate round-trips, before anything is timed
  const results: CodecResults = {
    samples: new Map(),
    baselines: new Map(),
    order: cases.map(keyOf),
    clocks: new Map(),
  };
  for (const [ops] of GROUPS) {
    const inGroup = cases.filter((c) => ops.includes(c.op));
    const baseline = keyOf(inGroup.find((c) => c.baseline === true)!);
    for (const c of inGroup) results.baselines.set(keyOf(c), baseline);
  }
  const add = (key: string, sample: Sample) => {
    if (!results.samples.has(key)) results.samples.set(key, []);
    results.samples.get(key)!.push(sample);
  };
  const children = new Map(PARTS.map((part) => [part, new Child(part, import.meta.path, ["--codec-part", part])]));
  try {
    for (const child of children.values()) await child.call("ready"); // all set up before anything is timed
    for (const [part, child] of children) {
      console.log(`\n── ${part} (own process) ──`);
      const printed = await child.call<{ samples: Record<string, Sample>; clockGHz: number }>("print");
      for (const [key, sample] of Object.entries(printed.samples)) add(key, sample);
      results.clocks.set(part, printed.clockGHz);
    }
    // Rounds: the cases of a group back to back, in a rotating order, so a ratio compares neighbours in time.
    const roundCases = cases.filter((c) => c.printedOnly !== true && c.op !== "receive (CPU)");
    for (let round = 0; round < ROUNDS; round++) {
      console.log(`codec round ${round + 1} of ${ROUNDS} (${ROUND_CPU_NS / 1e6} ms per case)…`);
      for (const [ops] of GROUPS) {
        const inGroup = roundCases.filter((c) => ops.includes(c.op));
        for (let i = 0; i < inGroup.length; i++) {
          const c = inGroup[(round + i) % inGroup.length]!;
          add(keyOf(c), await children.get(partOf(c))!.call<Sample>(`measure ${keyOf(c)}`));
        }
      }
    }
  } finally {
    await Promise.all([...children.values()].map((child) => child.close()));
  }
  return results;
}

// ---- loopback TCP (modes: see support/tcp.ts) ----------------------------------------------------------

/** The frames a sender cycles through: feed frames of 1000 items each, as the root sends them. */
function senderFrames(): Uint8Array[] {
  const builder = new RecordBatchBuilder();
  return Array.from({ length: FRAME_CYCLE }, (_, k) => feedFrame(msgpackr, builder, itemsFrom(k * BATCH, BATCH)));
}

async function serveSends(): Promise<void> {
  const frames = senderFrames();
  await serveCommands(async (_command, argument) => {
    const [mode, port, count] = argument.split(" ");
    await send(mode as TcpMode, Number(port), Number(count), frames);
  });
}

async function tcpRun(
  receiver: TcpReceiver,
  sender: Child,
  mode: TcpMode,
  bytes: number,
  frames: readonly Uint8Array[],
): Promise<TcpResult> {
  const plan = framesFor(frames, bytes);
  const received = receiver.expect(plan.bytes, plan.count);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`tcp ${mode}: not all bytes arrived within 60 s`)), 60_000);
  });
  try {
    const sent = sender.call(`send ${mode} ${receiver.portFor(mode)} ${plan.count}`);
    const [result] = await Promise.race([Promise.all([received, sent]), timeout]);
    return result;
  } finally {
    clearTimeout(timer);
  }
}

async function runTcpBenches(): Promise<Map<TcpMode, TcpResult[]>> {
  const frames = senderFrames();
  const receiver = new TcpReceiver(BATCH);
  const sender = new Child("tcp sender", import.meta.path, ["--tcp-sender"]);
  const results = new Map<TcpMode, TcpResult[]>(TCP_MODES.map((mode) => [mode, []]));
  const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0);
  console.log(
    `\nloopback TCP: ${mib(TCP_BYTES)} MiB per run of ${BATCH}-item feed frames (${frames[0]!.length} bytes), sender in its ` +
      `own process; ${TCP_ROUNDS} rounds of every mode (order rotating) after a ${mib(TCP_WARMUP_BYTES)} MiB warm-up`,
  );
  try {
    for (const mode of TCP_MODES) await tcpRun(receiver, sender, mode, TCP_WARMUP_BYTES, frames);
    for (let round = 0; round < TCP_ROUNDS; round++) {
      const line: string[] = [];
      for (let i = 0; i < TCP_MODES.length; i++) {
        const mode = TCP_MODES[(round + i) % TCP_MODES.length]!;
        const result = await tcpRun(receiver, sender, mode, TCP_BYTES, frames);
        results.get(mode)!.push(result);
        line.push(`${mode} ${fmtMBps(result.bytes / result.seconds)}`);
      }
      console.log(`  round ${round + 1}: ${line.join("  ")}`);
    }
  } finally {
    await sender.close();
    receiver.stop();
  }
  return results;
}

// ---- report --------------------------------------------------------------------------------------------

/** `value` computed within each pass/round (from its median samples), for every one that has all it needs. */
function perRound(results: CodecResults, value: (rateOf: (key: string) => number) => number): number[] {
  return Array.from({ length: 1 + ROUNDS }, (_, i) =>
    value((key) => results.samples.get(key)?.[i]?.median ?? Number.NaN),
  ).filter((v) => !Number.isNaN(v));
}

/** Items/s of encoding and decoding each item once. */
const roundTrip = (encodeRate: number, decodeRate: number) => 1 / (1 / encodeRate + 1 / decodeRate);

function reportCodecs(results: CodecResults, out: string[]): void {
  const rows = results.order.map((key) => {
    const samples = results.samples.get(key)!;
    const [op, codec] = key.split("|") as [Op, string];
    const reference = results.baselines.get(key)!;
    const rates = samples.map((s) => s.median);
    return [
      op,
      codec,
      fmtRate(median(rates)),
      fmtRange(rates, fmtRate),
      fmtRate(Math.max(...samples.map((s) => s.best))),
      fmtRatio(median(perRound(results, (rateOf) => rateOf(key) / rateOf(reference)))),
    ];
  });
  out.push(
    `codecs, each in its own process: items/s = median of mitata's median sample over the printed pass and ${ROUNDS} ` +
      `round${ROUNDS === 1 ? "" : "s"} (untuned, array and multiple rows: printed pass only);\nbest = fastest sample; × baseline = median of the ` +
      `within-round ratios to the group's baseline (JSON; memcpy for the receive path). mitata's clock estimate per ` +
      `process: ${[...results.clocks].map(([part, ghz]) => `${part} ${ghz.toFixed(2)} GHz`).join(", ")}`,
    "",
    table(["case", "codec", "items/s", "range", "best", "× baseline"], rows),
    "",
  );

  // The codec rule: codec.ts stays on msgpackr only while it encodes+decodes items ≥ 1.5× as fast as @msgpack/msgpack.
  const ruleRows: string[][] = [];
  let feedRatios: number[] = [];
  for (const [label, enc, dec] of [
    ["feed path (1000-item frames)", "encode batch", "decode batch"],
    ["one item", "encode 1", "decode 1"],
  ] as const) {
    const rt = (codec: string) => (rateOf: (key: string) => number) =>
      roundTrip(rateOf(`${enc}|${codec}`), rateOf(`${dec}|${codec}`));
    const ratios = perRound(results, (rateOf) => rt("codec.ts")(rateOf) / rt("@msgpack/msgpack")(rateOf));
    if (enc === "encode batch") feedRatios = ratios;
    ruleRows.push([
      label,
      fmtRate(median(perRound(results, rt("codec.ts")))),
      fmtRate(median(perRound(results, rt("@msgpack/msgpack")))),
      fmtRatio(median(ratios)),
      ratios.map(fmtRatio).join(" "),
      fmtRatio(median(perRound(results, (rateOf) => rt("codec.ts")(rateOf) / rt("JSON")(rateOf)))),
    ]);
  }
  out.push(
    table(["encode+decode", "codec.ts", "@msgpack/msgpack", "codec.ts ÷", "per round", "codec.ts × JSON"], ruleRows),
    "",
  );
  const feedRatio = median(feedRatios);
  const chosen = feedRatio >= CODEC_RULE ? "codec.ts" : "@msgpack/msgpack";
  const below = feedRatios.filter((r) => r < CODEC_RULE).length;
  out.push(
    `codec rule (codec.ts on msgpackr only if it encodes+decodes ≥ ${CODEC_RULE}× as fast as @msgpack/msgpack on the feed path): ` +
      `${fmtRatio(feedRatio)} → ${chosen}` +
      (below > 0 && below < feedRatios.length ? ` (${below} of ${feedRatios.length} rounds say otherwise)` : "") +
      (chosen === "codec.ts"
        ? "; codec.ts is built on msgpackr: consistent"
        : "; codec.ts is built on msgpackr: the rule says switch to @msgpack/msgpack"),
  );

  const decodeKey = `decode batch|${chosen}`;
  const decodeRates = results.samples.get(decodeKey)!.map((s) => s.median);
  const decodeRate = median(decodeRates);
  const overJson = median(perRound(results, (rateOf) => rateOf(decodeKey) / rateOf("decode batch|JSON")));
  const reached = Math.max(...decodeRates) >= AIM_DECODE_ITEMS_PER_S ? "; some rounds reached it" : "";
  out.push(
    "aims",
    judgeAim(`${chosen} decodes feed blobs`, decodeRate, AIM_DECODE_ITEMS_PER_S, {
      format: fmtRate,
      note: `(${fmtRatio(overJson)} JSON's rate on the same blobs${reached})`,
    }).line,
  );
  // What the per-record calls cost: the same payloads decoded in one msgpackr call, in the same process and pass.
  const multiple = results.samples.get("decode multiple|codec.ts (msgpackr alone)")![0]!.median;
  const perRecord = results.samples.get("decode batch|codec.ts")![0]!.median;
  out.push(
    `  (the same 1000 payloads back to back, one unpackMultiple call: ${fmtRate(multiple)}, ` +
      `${fmtRatio(multiple / perRecord)} msgpackr's record-by-record rate in the same pass)`,
    "",
  );
}

function reportTcp(tcp: Map<TcpMode, TcpResult[]>, out: string[], codecs: CodecResults | undefined): void {
  const raw = tcp.get("raw")!;
  const ofRaw = (mode: TcpMode) => tcp.get(mode)!.map((r, round) => raw[round]!.seconds / r.seconds);
  const rows = TCP_MODES.map((mode) => {
    const runs = tcp.get(mode)!;
    const rates = runs.map((r) => r.bytes / r.seconds);
    return [
      mode,
      fmtMBps(median(rates)),
      fmtRange(rates, fmtMBps),
      fmtRate(median(runs.map((r) => r.items / r.seconds))),
      pct(median(ofRaw(mode))),
      ofRaw(mode).map(pct).join(" "),
    ];
  });
  out.push(
    "loopback TCP: raw = Bun sockets, bytes counted (the ceiling); recv = raw sender → Connection (FrameDecoder + " +
      "parseMessage); framed = Connection → Connection",
    "",
    table(["mode", "median", "range", "items/s", "of raw", "per round"], rows),
    "",
  );
  if (codecs !== undefined) {
    // If framing's CPU were the only extra work, each byte would cost 1/raw + 1/framing seconds.
    const rawRate = median(raw.map((r) => r.bytes / r.seconds));
    const framing =
      median(codecs.samples.get("receive (CPU)|FrameDecoder + parseMessage")!.map((s) => s.median)) *
      receiveBytesPerItem;
    out.push(
      `the receive path alone does ${fmtMBps(framing)} on one core (${fmtRatio(framing / rawRate)} the raw TCP rate): ` +
        `its CPU accounts for a framed/raw of ${pct(1 / (1 + rawRate / framing))}; the rest of a gap is the socket path or noise`,
    );
  }
  const framed = median(ofRaw("framed"));
  const below = ofRaw("framed").filter((r) => r < AIM_FRAMED_OF_RAW).length;
  out.push(
    judgeAim("framed, of raw", framed, AIM_FRAMED_OF_RAW, {
      format: pct,
      note: `(${below} of ${raw.length} rounds below ${pct(AIM_FRAMED_OF_RAW)})`,
    }).line,
  );
}

async function main(): Promise<void> {
  const started = performance.now();
  console.log(
    `framing bench — bun ${Bun.version}, ${navigator.hardwareConcurrency} cores, load ${loadavg()[0]!.toFixed(2)}, ` +
      `items { id, payload: ${PAYLOAD_CHARS}-char string }, msgpackr native string extraction ` +
      (isNativeAccelerationEnabled ? "on" : "off"),
  );
  const codecs = ONLY === "tcp" ? undefined : await runCodecBenches();
  const tcp = ONLY === "codec" ? undefined : await runTcpBenches();
  const out = ["", "═".repeat(110), "framing summary", ""];
  if (codecs !== undefined) reportCodecs(codecs, out);
  if (tcp !== undefined) reportTcp(tcp, out, codecs);
  const seconds = ((performance.now() - started) / 1000).toFixed(0);
  out.push(
    `(load average now ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}; the bench took ${seconds} s)`,
  );
  console.log(out.join("\n"));
}

if (process.argv[2] === "--codec-part") await servePart(process.argv[3] as Part);
else if (process.argv[2] === "--tcp-sender") await serveSends();
else await main();
