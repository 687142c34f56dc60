import { describe, expect, test } from "bun:test";
import { MetricsText } from "../../src/metrics/prometheus.ts";
import { parsePrometheusText, sampleValue } from "../support/prometheus-text.ts";

describe("MetricsText", () => {
  test("writes HELP and TYPE before each family's samples, labels escaped, histograms cumulative", () => {
    const text = new MetricsText()
      .counter("jobs_total", "Jobs.\nTwo lines, a \\ too.", [
        { labels: { task: 'say "hi"\\now' }, value: 3 },
        { labels: { task: "line\nbreak" }, value: 0 },
      ])
      .gauge("workers", "Workers.", 4)
      .histogram(
        "call_seconds",
        "Calls.",
        [0.001, 0.01, 1],
        [
          { labels: { task: "a" }, counts: [2, 0, 5, 1], sum: 3.5 },
          { labels: { task: "b" }, counts: [], sum: 0 },
        ],
      )
      .toString();
    expect(text.split("\n").slice(0, 5)).toEqual([
      "# HELP jobs_total Jobs.\\nTwo lines, a \\\\ too.",
      "# TYPE jobs_total counter",
      'jobs_total{task="say \\"hi\\"\\\\now"} 3',
      'jobs_total{task="line\\nbreak"} 0',
      "# HELP workers Workers.",
    ]);
    const families = parsePrometheusText(text);
    expect([...families.keys()]).toEqual(["jobs_total", "workers", "call_seconds"]);
    expect(sampleValue(families, "jobs_total", { task: 'say "hi"\\now' })).toBe(3);
    expect(sampleValue(families, "jobs_total", { task: "line\nbreak" })).toBe(0);
    expect(sampleValue(families, "workers")).toBe(4);
    const buckets = families
      .get("call_seconds")!
      .samples.filter((s) => s.name === "call_seconds_bucket" && s.labels.task === "a");
    expect(buckets.map((s) => [s.labels.le, s.value])).toEqual([
      ["0.001", 2],
      ["0.01", 2],
      ["1", 7],
      ["+Inf", 8],
    ]);
    expect(sampleValue(families, "call_seconds_count", { task: "a" })).toBe(8);
    expect(sampleValue(families, "call_seconds_sum", { task: "a" })).toBe(3.5);
    expect(sampleValue(families, "call_seconds_count", { task: "b" })).toBe(0);
  });

  test("a family without samples is left out; bad names are refused", () => {
    expect(new MetricsText().counter("none_total", "Nothing.", []).histogram("h", "H.", [1], []).toString()).toBe("");
    expect(() => new MetricsText().gauge("bad-name", "x", 1)).toThrow(/not a valid Prometheus metric name/);
    expect(() => new MetricsText().gauge("ok", "x", [{ labels: { "bad-label": "v" }, value: 1 }])).toThrow(
      /label name/,
    );
  });
});

describe("the test's exposition reader refuses what Prometheus would", () => {
  const refused: Array<[string, string, RegExp]> = [
    ["a sample before its TYPE", "x 1\n", /no TYPE/],
    ["a TYPE given twice", "# TYPE x gauge\n# TYPE x gauge\n", /twice/],
    ["a duplicate series", '# TYPE x gauge\nx{a="1"} 1\nx{a="1"} 2\n', /given twice/],
    ["a negative counter", "# TYPE x_total counter\nx_total -1\n", /counter/],
    ["an unquoted label", "# TYPE x gauge\nx{a=1} 1\n", /not quoted/],
    ["a bad value", "# TYPE x gauge\nx one\n", /bad value/],
    ["no final newline", "# TYPE x gauge\nx 1", /newline/],
    [
      "buckets that are not cumulative",
      '# TYPE h histogram\nh_bucket{le="1"} 5\nh_bucket{le="+Inf"} 4\nh_sum 1\nh_count 4\n',
      /cumulative/,
    ],
    ["no +Inf bucket", '# TYPE h histogram\nh_bucket{le="1"} 5\nh_sum 1\nh_count 5\n', /\+Inf/],
    ["+Inf unequal to _count", '# TYPE h histogram\nh_bucket{le="+Inf"} 5\nh_sum 1\nh_count 6\n', /!= _count/],
    [
      "le out of order",
      '# TYPE h histogram\nh_bucket{le="2"} 1\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
      /increasing/,
    ],
  ];
  for (const [what, text, message] of refused) {
    test(what, () => expect(() => parsePrometheusText(text)).toThrow(message));
  }
});
