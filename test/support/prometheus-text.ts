/**
 * A strict reader of the Prometheus text exposition format (0.0.4), for tests: it parses what a
 * /metrics endpoint serves and throws on anything a Prometheus server would refuse or misread —
 * a sample before its TYPE, a family declared twice, a bad name or label, a duplicate series, a
 * counter below zero, histogram buckets out of order or not cumulative, +Inf missing or unequal to
 * `_count`.
 */

export interface ParsedSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface ParsedFamily {
  name: string;
  type: string;
  help: string;
  samples: ParsedSample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

function parseValue(text: string, line: string): number {
  if (text === "+Inf") return Number.POSITIVE_INFINITY;
  if (text === "-Inf") return Number.NEGATIVE_INFINITY;
  if (text === "NaN") return Number.NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`bad value "${text}" in: ${line}`);
  return Number(text);
}

/** Reads `{a="x",b="y\"z"}` from `text` at `at` (just after the name); returns the labels and where it ended. */
function parseLabels(text: string, at: number, line: string): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  if (text[at] !== "{") return { labels, end: at };
  let i = at + 1;
  while (text[i] !== "}") {
    const eq = text.indexOf("=", i);
    if (eq < 0) throw new Error(`bad labels in: ${line}`);
    const name = text.slice(i, eq);
    if (!LABEL.test(name)) throw new Error(`bad label name "${name}" in: ${line}`);
    if (name in labels) throw new Error(`label "${name}" twice in: ${line}`);
    if (text[eq + 1] !== '"') throw new Error(`label value not quoted in: ${line}`);
    let value = "";
    let j = eq + 2;
    for (; ; j++) {
      const c = text[j];
      if (c === undefined) throw new Error(`unterminated label value in: ${line}`);
      if (c === '"') break;
      if (c === "\\") {
        const next = text[++j];
        if (next === "n") value += "\n";
        else if (next === "\\" || next === '"') value += next;
        else throw new Error(`bad escape \\${next} in: ${line}`);
      } else {
        value += c;
      }
    }
    labels[name] = value;
    i = j + 1;
    if (text[i] === ",") i++;
    else if (text[i] !== "}") throw new Error(`expected , or } in: ${line}`);
  }
  return { labels, end: i + 1 };
}

function familyOf(name: string, families: Map<string, ParsedFamily>): ParsedFamily | undefined {
  const exact = families.get(name);
  if (exact !== undefined) return exact;
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!name.endsWith(suffix)) continue;
    const family = families.get(name.slice(0, -suffix.length));
    if (family?.type === "histogram" || (family?.type === "summary" && suffix !== "_bucket")) return family;
  }
  return undefined;
}

const seriesKey = (name: string, labels: Record<string, string>, without?: string): string =>
  `${name}{${Object.entries(labels)
    .filter(([label]) => label !== without)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([label, value]) => `${label}=${JSON.stringify(value)}`)
    .join(",")}}`;

/** Parses and validates a whole exposition; returns its families by name. */
export function parsePrometheusText(text: string): Map<string, ParsedFamily> {
  if (text.length > 0 && !text.endsWith("\n")) throw new Error("the exposition does not end with a newline");
  const families = new Map<string, ParsedFamily>();
  const seen = new Set<string>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    if (line.startsWith("#")) {
      const match = line.match(/^# (HELP|TYPE) (\S+) ?(.*)$/);
      if (match === null) continue; // a plain comment
      const [, kind, name, rest] = match as unknown as [string, string, string, string];
      if (!NAME.test(name)) throw new Error(`bad metric name "${name}" in: ${line}`);
      let family = families.get(name);
      if (kind === "TYPE") {
        if (!TYPES.has(rest)) throw new Error(`bad type "${rest}" in: ${line}`);
        if (family?.type) throw new Error(`TYPE of ${name} given twice`);
        if (family !== undefined && family.samples.length > 0) throw new Error(`TYPE of ${name} after its samples`);
        families.set(name, (family = { name, type: rest, help: family?.help ?? "", samples: family?.samples ?? [] }));
      } else {
        if (family?.help) throw new Error(`HELP of ${name} given twice`);
        if (family === undefined) families.set(name, { name, type: "", help: rest, samples: [] });
        else family.help = rest;
      }
      continue;
    }
    const nameEnd = line.search(/[{ ]/);
    if (nameEnd <= 0) throw new Error(`bad sample line: ${line}`);
    const name = line.slice(0, nameEnd);
    if (!NAME.test(name)) throw new Error(`bad metric name "${name}" in: ${line}`);
    const { labels, end } = parseLabels(line, nameEnd, line);
    const fields = line.slice(end).trim().split(/\s+/);
    if (fields.length < 1 || fields.length > 2 || fields[0] === "") throw new Error(`bad sample line: ${line}`);
    const value = parseValue(fields[0]!, line);
    const family = familyOf(name, families);
    if (family === undefined || family.type === "") throw new Error(`sample ${name} has no TYPE before it`);
    const key = seriesKey(name, labels);
    if (seen.has(key)) throw new Error(`series ${key} given twice`);
    seen.add(key);
    if (family.type === "counter" && !(value >= 0)) throw new Error(`counter ${key} is ${value}`);
    family.samples.push({ name, labels, value });
  }
  for (const family of families.values()) {
    if (family.type === "") throw new Error(`${family.name} has HELP but no TYPE`);
    if (family.type === "histogram") checkHistogram(family);
  }
  return families;
}

function checkHistogram(family: ParsedFamily): void {
  const series = new Map<string, { buckets: Array<[number, number]>; sum?: number; count?: number }>();
  const of = (labels: Record<string, string>) => {
    const key = seriesKey(family.name, labels, "le");
    let entry = series.get(key);
    if (entry === undefined) series.set(key, (entry = { buckets: [] }));
    return entry;
  };
  for (const sample of family.samples) {
    if (sample.name === `${family.name}_bucket`) {
      const le = sample.labels.le;
      if (le === undefined) throw new Error(`${family.name}_bucket without le`);
      of(sample.labels).buckets.push([parseValue(le, `le="${le}"`), sample.value]);
    } else if (sample.name === `${family.name}_sum`) of(sample.labels).sum = sample.value;
    else if (sample.name === `${family.name}_count`) of(sample.labels).count = sample.value;
    else throw new Error(`${sample.name} in histogram ${family.name}`);
  }
  for (const [key, { buckets, sum, count }] of series) {
    if (buckets.length === 0) throw new Error(`${key} has no buckets`);
    for (let i = 1; i < buckets.length; i++) {
      if (!(buckets[i]![0] > buckets[i - 1]![0])) throw new Error(`${key}: le not increasing at ${buckets[i]![0]}`);
      if (buckets[i]![1] < buckets[i - 1]![1])
        throw new Error(`${key}: bucket counts not cumulative at le=${buckets[i]![0]}`);
    }
    const last = buckets[buckets.length - 1]!;
    if (last[0] !== Number.POSITIVE_INFINITY) throw new Error(`${key} has no +Inf bucket`);
    if (count === undefined || sum === undefined) throw new Error(`${key} lacks _count or _sum`);
    if (last[1] !== count) throw new Error(`${key}: +Inf bucket ${last[1]} != _count ${count}`);
  }
}

/** The one sample of `name` whose labels include `labels`; throws when there is none or several. */
export function sampleValue(
  families: Map<string, ParsedFamily>,
  name: string,
  labels: Record<string, string> = {},
): number {
  const matches = [...families.values()]
    .flatMap((family) => family.samples)
    .filter(
      (sample) =>
        sample.name === name && Object.entries(labels).every(([label, value]) => sample.labels[label] === value),
    );
  if (matches.length !== 1) throw new Error(`${matches.length} samples of ${name}${JSON.stringify(labels)}`);
  return matches[0]!.value;
}

/** GETs a /metrics URL (bounded), checks the answer is the text format, and parses it. */
export async function scrape(url: string): Promise<Map<string, ParsedFamily>> {
  const response = await fetch(url, { signal: AbortSignal.timeout(5000) });
  if (response.status !== 200) throw new Error(`GET ${url}: ${response.status}`);
  const type = response.headers.get("content-type") ?? "";
  if (!type.startsWith("text/plain; version=0.0.4")) throw new Error(`GET ${url}: content-type ${type}`);
  return parsePrometheusText(await response.text());
}
