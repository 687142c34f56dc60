/**
 * The word count of bench/wordcount.bench.ts: a document split into lines, each line's words of 3+
 * letters counted. A package folder shipped to the nodes (it imports nothing from outside it); the plain
 * loop in the bench calls the same functions.
 */

/** A document's lines. */
export function lines(document: string): string[] {
  return document.split("\n");
}

/** Counts of each word of 3+ letters in a line (case kept). */
export function countWords(line: string): Record<string, number> {
  // A Map, not `{}`: words such as "constructor" would find Object.prototype's.
  const counts = new Map<string, number>();
  for (const word of line.match(/[A-Za-z]{3,}/g) ?? []) counts.set(word, (counts.get(word) ?? 0) + 1);
  return Object.fromEntries(counts);
}

/** A combiner class doing what the built-in "sum-by-key" does (to measure a user's class beside it). */
export class WordTotals {
  totals = new Map<string, number>();

  add(counts: Record<string, number>): void {
    for (const word in counts) this.totals.set(word, (this.totals.get(word) ?? 0) + counts[word]!);
  }

  merge(other: WordTotals): void {
    for (const [word, count] of other.totals) this.totals.set(word, (this.totals.get(word) ?? 0) + count);
  }

  result(): Record<string, number> {
    return Object.fromEntries(this.totals);
  }
}
