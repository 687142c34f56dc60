// The demo's tasks: lines of text → words → tagged words, stop words dropped. This folder is shipped to
// every node as it is; `log` there goes to the cluster's log server.
import { log } from "pcluster";

export interface Line {
  id: number;
  text: string;
}

export interface Word {
  line: number;
  position: number;
  word: string;
}

export interface TaggedWord extends Word {
  tags: string[];
}

/** Function task (one output): lower case, punctuation gone, single spaces. */
export function normalize(line: Line): Line {
  if (line.id % 1000 === 0) log(`normalize: at line ${line.id}`);
  const text = line.text
    .toLowerCase()
    .replace(/[^a-z' ]+/g, " ")
    .replace(/\s+/g, " ")
    .trim();
  return { id: line.id, text };
}

/** Generator task (many outputs): one item per word of the line. */
export function* splitWords(line: Line): Generator<Word> {
  const words = line.text === "" ? [] : line.text.split(" ");
  for (const [position, word] of words.entries()) yield { line: line.id, position, word };
}

/** Class task, built once per worker with `args`: drops stop words (by returning null), tags the rest. */
export class WordTagger {
  readonly #stopWords: Set<string>;

  constructor(stopWords: string[]) {
    this.#stopWords = new Set(stopWords);
    log(`WordTagger ready with ${this.#stopWords.size} stop words`);
  }

  process(word: Word): TaggedWord | null {
    if (this.#stopWords.has(word.word)) return null;
    return { ...word, tags: tagsOf(word.word) };
  }
}

/**
 * Combiner (`combine: { function: TagCounts }`): each worker folds its tagged words into counts per word
 * and per tag where they are made; the root merges the workers' partials into the totals.
 */
export class TagCounts {
  // Maps, not `{}`: a word such as "constructor" would find Object.prototype's.
  words = new Map<string, number>();
  tags = new Map<string, number>();

  add(tagged: TaggedWord): void {
    increment(this.words, tagged.word, 1);
    for (const tag of tagged.tags) increment(this.tags, tag, 1);
  }

  merge(other: TagCounts): void {
    for (const [word, count] of other.words) increment(this.words, word, count);
    for (const [tag, count] of other.tags) increment(this.tags, tag, count);
  }

  result(): { words: Map<string, number>; tags: Map<string, number> } {
    return { words: this.words, tags: this.tags };
  }
}

function increment(counts: Map<string, number>, key: string, by: number): void {
  counts.set(key, (counts.get(key) ?? 0) + by);
}

export function tagsOf(word: string): string[] {
  const tags: string[] = [];
  if (word.length >= 7) tags.push("long");
  if (word.length > 2 && [...word].reverse().join("") === word) tags.push("palindrome");
  if (word.endsWith("ing")) tags.push("-ing");
  return tags;
}
