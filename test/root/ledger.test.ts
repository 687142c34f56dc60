import { describe, expect, test } from "bun:test";
import { Ledger, type LedgerEntry } from "../../src/root/ledger.ts";
import { seededRandom } from "../support/random.ts";

/** The ledger's content, sorted by id, to compare with a Map's. */
function contents(entries: Iterable<[number, LedgerEntry]>): Array<[number, LedgerEntry]> {
  return [...entries].sort((a, b) => a[0] - b[0]);
}

describe("Ledger", () => {
  test("add, get, replace and take, for ids in the array and ids pushed out of it", () => {
    const ledger = new Ledger();
    const bytes = new Uint8Array([1, 2, 3]);
    ledger.add(5, 50);
    ledger.add(5 + ledger.capacity, bytes); // same slot: 5 is pushed out, and still there
    expect(ledger.size).toBe(2);
    expect(ledger.get(5)).toBe(50);
    expect(ledger.get(5 + ledger.capacity)).toBe(bytes);
    expect(ledger.get(6)).toBeUndefined();
    ledger.replace(5, 51);
    ledger.replace(7, 70); // not in the ledger: nothing happens
    expect(ledger.get(5)).toBe(51);
    expect(ledger.get(7)).toBeUndefined();
    expect(ledger.take(5)).toBe(51);
    expect(ledger.take(5)).toBeUndefined();
    expect(ledger.take(5 + ledger.capacity)).toBe(bytes);
    expect(ledger.size).toBe(0);
    expect([...ledger.entries()]).toEqual([]);
  });

  test("ids near 2^32 work like any other", () => {
    const ledger = new Ledger();
    const ids = [0xffff_fffe, 0xffff_ffff, 1, 2];
    for (const id of ids) ledger.add(id, id % 1000);
    for (const id of ids) expect(ledger.get(id)).toBe(id % 1000);
    expect(contents(ledger.entries())).toEqual(contents(ids.map((id) => [id, id % 1000])));
  });

  test("random sends and completions, with a few items that linger: always what a Map would hold", () => {
    const random = seededRandom(7);
    const ledger = new Ledger();
    const model = new Map<number, LedgerEntry>();
    let nextId = 1;
    const lingering: number[] = [];
    const sent: number[] = []; // the others, in the order they were sent
    let head = 0;
    for (let step = 0; step < 200_000; step++) {
      const roll = random();
      while (head < sent.length && !model.has(sent[head]!)) head++;
      if (head === sent.length || (roll < 0.5 && model.size < 3000)) {
        const id = nextId++;
        const entry = random() < 0.1 ? new Uint8Array([id & 255]) : id * 3;
        ledger.add(id, entry);
        model.set(id, entry);
        if (random() < 0.001) lingering.push(id);
        else sent.push(id);
      } else if (roll < 0.98) {
        // Done: mostly the oldest in flight, sometimes one a little later.
        const id = sent[Math.min(sent.length - 1, head + Math.floor(random() * 64))]!;
        expect(ledger.take(id)).toBe(model.get(id));
        model.delete(id);
      } else if (roll < 0.99) {
        const id = nextId - 1 - Math.floor(random() * 100);
        if (model.has(id)) {
          ledger.replace(id, -id);
          model.set(id, -id);
        }
      } else {
        const id = Math.floor(random() * nextId) + 1;
        expect(ledger.get(id)).toBe(model.get(id));
      }
      expect(ledger.size).toBe(model.size);
    }
    expect(lingering.length).toBeGreaterThan(20);
    expect(contents(ledger.entries())).toEqual(contents(model));
    for (const id of lingering) expect(ledger.get(id)).toBe(model.get(id));
    // The lingering few were pushed out to the side; the array did not grow for them.
    expect(ledger.capacity).toBeLessThanOrEqual(8192);
  });

  test("ids spread over a range wider than the array make it grow, and nothing is lost", () => {
    const ledger = new Ledger();
    const model = new Map<number, LedgerEntry>();
    // Two lanes' worth of ids: this ledger gets every other run of 4096, 40 000 in flight at once.
    for (let id = 1; model.size < 40_000; id++) {
      if (((id >>> 12) & 1) === 0) {
        ledger.add(id, id);
        model.set(id, id);
      }
    }
    expect(ledger.size).toBe(40_000);
    expect(ledger.capacity).toBeGreaterThanOrEqual(65_536);
    expect(contents(ledger.entries())).toEqual(contents(model));
    for (const id of model.keys()) expect(ledger.take(id)).toBe(id);
    expect(ledger.size).toBe(0);
    ledger.clear();
    expect(ledger.capacity).toBe(4096);
  });
});
