/**
 * The Prometheus text exposition format (version 0.0.4), written by hand: a HELP and a TYPE line per
 * metric family, then its samples. Our counters already live in shared memory and our histograms
 * arrive as bucket counts, which prom-client's objects cannot take (its Histogram only `observe`s,
 * its Counter only `inc`s, and it keeps a global registry); writing the format is all we need.
 *
 * @example
 * const text = new MetricsText();
 * text.counter("pcluster_task_processed_total", "Calls that returned.", [{ labels: { task: "parse" }, value: 12 }]);
 * new Response(text.toString(), { headers: { "content-type": PROMETHEUS_CONTENT_TYPE } });
 */

export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

export type Labels = Readonly<Record<string, string>>;

export interface Sample {
  labels?: Labels;
  value: number;
}

export interface HistogramSeries {
  labels?: Labels;
  /** Per-bucket counts (not cumulative): one per bound, then the overflow bucket. */
  counts: readonly number[];
  /** The sum of all observed values, in the unit of `bounds`. */
  sum: number;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export class MetricsText {
  readonly #lines: string[] = [];

  counter(name: string, help: string, samples: number | readonly Sample[]): this {
    return this.#family(name, "counter", help, samples);
  }

  gauge(name: string, help: string, samples: number | readonly Sample[]): this {
    return this.#family(name, "gauge", help, samples);
  }

  /** A histogram family: `_bucket` samples with cumulative counts per `le`, then `_sum` and `_count`. */
  histogram(name: string, help: string, bounds: readonly number[], series: readonly HistogramSeries[]): this {
    if (series.length === 0) return this;
    this.#header(name, "histogram", help);
    for (const { labels = {}, counts, sum } of series) {
      let cumulative = 0;
      for (let bucket = 0; bucket <= bounds.length; bucket++) {
        cumulative += counts[bucket] ?? 0;
        const le = bucket < bounds.length ? formatValue(bounds[bucket]!) : "+Inf";
        this.#sample(`${name}_bucket`, { ...labels, le }, cumulative);
      }
      this.#sample(`${name}_sum`, labels, sum);
      this.#sample(`${name}_count`, labels, cumulative);
    }
    return this;
  }

  toString(): string {
    return this.#lines.length === 0 ? "" : `${this.#lines.join("\n")}\n`;
  }

  /** A family without samples (per-task metrics while no pipeline runs) is left out entirely. */
  #family(name: string, type: string, help: string, samples: number | readonly Sample[]): this {
    if (typeof samples !== "number" && samples.length === 0) return this;
    this.#header(name, type, help);
    for (const sample of typeof samples === "number" ? [{ value: samples }] : samples) {
      this.#sample(name, sample.labels ?? {}, sample.value);
    }
    return this;
  }

  #header(name: string, type: string, help: string): void {
    if (!METRIC_NAME.test(name)) throw new TypeError(`"${name}" is not a valid Prometheus metric name`);
    const escaped = help.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
    this.#lines.push(`# HELP ${name} ${escaped}`, `# TYPE ${name} ${type}`);
  }

  #sample(name: string, labels: Labels, value: number): void {
    const pairs = Object.entries(labels).map(([label, text]) => {
      if (!LABEL_NAME.test(label)) throw new TypeError(`"${label}" is not a valid Prometheus label name`);
      return `${label}="${text.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n")}"`;
    });
    this.#lines.push(`${name}${pairs.length > 0 ? `{${pairs.join(",")}}` : ""} ${formatValue(value)}`);
  }
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Number.POSITIVE_INFINITY) return "+Inf";
  if (value === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(value);
}
