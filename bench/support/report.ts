/** Formatting for bench reports: rates, ratios, ranges, medians and plain-text tables. */

export const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
export const fmtRate = (perSecond: number) =>
  perSecond >= 1e6 ? `${(perSecond / 1e6).toFixed(2)} M/s` : `${(perSecond / 1e3).toFixed(0)} k/s`;
export const fmtMBps = (bytesPerSecond: number) => `${(bytesPerSecond / 1e6).toFixed(0)} MB/s`;
export const fmtRatio = (ratio: number) => `${ratio.toFixed(2)}×`;
export const pct = (ratio: number) => `${(ratio * 100).toFixed(0)}%`;
export const fmtRange = (values: readonly number[], fmt: (v: number) => string) =>
  values.length < 2 ? "" : `${fmt(Math.min(...values))} … ${fmt(Math.max(...values))}`;

export function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = head.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  const line = (cells: readonly string[]) =>
    cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ");
  return [line(head), widths.map((w) => "─".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}
