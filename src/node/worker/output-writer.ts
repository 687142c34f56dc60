import { ItemTooLargeError } from "../../errors.ts";
import { byteArrayHead, encodeDeclined, encodeItem, stringHead } from "../../protocol/codec.ts";
import { DoneList, RECORD_HEADER_BYTES, RecordKind, writeRecordHeader } from "../../protocol/record.ts";
import { SMALL_OUTPUT_BYTES, SmallTarget, encodeSmallInto } from "../../protocol/small-msgpack.ts";
import type { ByteRing } from "../ring.ts";
import { FLAG_OVERSIZE, type FromWorker } from "../worker-messages.ts";

const EMPTY = new Uint8Array(0);
/** Uncommitted output bytes after which the writer commits on its own. */
const COMMIT_BYTES = 16 * 1024;

/**
 * Writes records to the output ring; waits (without blocking the thread) when it is full. Records are
 * committed in batches (`flush`, or every COMMIT_BYTES): each commit is a store the engine's thread
 * must see, and a wake-up when it sleeps, so one per record would cost more than the record.
 *
 * Finished items are collected into one Done record, written at every commit ahead of it: outputs of a
 * finished item are never visible without its Done, so a crash re-runs only items whose outputs the
 * engine never saw (and the one that was running).
 */
export class OutputWriter {
  #position: number;
  #committed: number;
  #nextRef = 1;
  readonly #done: DoneList;
  #doneFlags = 0;
  readonly #target: SmallTarget;

  constructor(
    readonly ring: ByteRing,
    /** Sends the engine a message (an oversize output's bytes). */
    readonly post: (message: FromWorker, transfer?: ArrayBuffer[]) => void,
    /** Largest Output record payload: a larger output throws `ItemTooLargeError` and writes nothing. */
    readonly maxItemBytes = Number.POSITIVE_INFINITY,
    /**
     * A combiner's partial: it is written right before every Done record, which is then written only
     * by `settle` (and when the list of finished items is full), so that it ships less often.
     */
    readonly partial?: { take(): Uint8Array | undefined },
  ) {
    this.#done = new DoneList(partial === undefined ? 256 : 4096);
    this.#position = ring.writePosition;
    this.#committed = this.#position;
    this.#target = new SmallTarget(ring.data);
  }

  /**
   * Writes the item `value` encoded: a small one straight into the ring when there is room for it in one
   * piece (no bytes of its own, no copy), anything else as `write` does. Throws what `encodeItem` throws
   * (an `ItemEncodeError` naming `name()` and the path) and then writes nothing.
   */
  writeValue(
    kind: number,
    stage: number,
    flags: number,
    id: number,
    value: unknown,
    name: () => string,
  ): void | Promise<void> {
    const ring = this.ring;
    const position = this.#position;
    const room = Math.min(ring.roomAt(position), RECORD_HEADER_BYTES + ring.maxPayload);
    if (room > RECORD_HEADER_BYTES) {
      const offset = ring.offsetOf(position);
      const length = encodeSmallInto(value, this.#target, offset + RECORD_HEADER_BYTES, offset + room);
      if (length >= 0) {
        if (length > this.maxItemBytes && kind === RecordKind.Output) throw this.#tooLarge(length);
        writeRecordHeader(ring.view, offset, kind, stage, flags, id, length);
        const next = (position + RECORD_HEADER_BYTES + length) >>> 0;
        this.#position = next;
        if ((next - this.#committed) >>> 0 >= COMMIT_BYTES) this.flush();
        return;
      }
    }
    // Bytes or text too large for the ring (a file's): written once, behind their head, into memory of their own.
    if (ArrayBuffer.isView(value) && value.byteLength > this.ring.maxPayload) {
      const head = byteArrayHead(value);
      if (head !== undefined) return this.#writeOversizeHeaded(kind, stage, flags, id, head, value as Uint8Array);
    }
    if (typeof value === "string" && value.length > this.ring.maxPayload) {
      return this.#writeOversizeHeaded(kind, stage, flags, id, undefined, value);
    }
    // With room for any small item, the writer declined this one: msgpackr's, without a second try.
    const declined = room >= RECORD_HEADER_BYTES + SMALL_OUTPUT_BYTES;
    return this.write(kind, stage, flags, id, declined ? encodeDeclined(value, name()) : encodeItem(value, name()));
  }

  write(kind: number, stage: number, flags: number, id: number, bytes: Uint8Array): void | Promise<void> {
    // Checked before anything is written: the root could not take it, and its item gets a task error.
    if (bytes.length > this.maxItemBytes && kind === RecordKind.Output) throw this.#tooLarge(bytes.length);
    if (bytes.length > this.ring.maxPayload) return this.#writeOversize(kind, stage, flags, id, bytes);
    const next = this.ring.tryWrite(this.#position, kind, stage, flags, id, bytes);
    if (next < 0) return this.#writeWhenRoom(kind, stage, flags, id, bytes);
    this.#position = next;
    if ((next - this.#committed) >>> 0 >= COMMIT_BYTES) this.flush();
  }

  /** Writes only if there is room right now, and commits at once (a share should not wait). */
  tryWrite(kind: number, stage: number, flags: number, id: number, bytes: Uint8Array): boolean {
    if (bytes.length > this.ring.maxPayload) return false;
    const next = this.ring.tryWrite(this.#position, kind, stage, flags, id, bytes);
    if (next < 0) return false;
    this.#position = next;
    this.flush();
    return true;
  }

  /** Records that the item (`flags`, `id`) is finished, having given `outputs` outputs; it goes out with the next Done record. */
  finished(flags: number, id: number, outputs: number): void | Promise<void> {
    if (this.#done.count > 0 && flags !== this.#doneFlags) {
      const writing = this.#writeDone(true);
      if (writing !== undefined) return writing.then(() => this.finished(flags, id, outputs));
    }
    this.#doneFlags = flags;
    if (this.#done.add(id, outputs)) return this.#writeDone(true);
  }

  /** Makes everything written so far visible to the engine, with the Done of every finished item if it fits. */
  flush(): void {
    if (this.partial === undefined) void this.#writeDone(false);
    if (this.#committed === this.#position) return;
    this.#committed = this.#position;
    this.ring.commit(this.#position);
  }

  /**
   * Like `flush`, but waits for room for the Done record: afterwards every finished item is committed.
   * Returns a promise only when it had to wait (settling after every slow item must cost no promise).
   */
  settle(): void | Promise<void> {
    const writing = this.#writeDone(true);
    if (writing !== undefined) return writing.then(() => this.flush());
    this.flush();
  }

  /** Writes the Done record; when there is no room, waits for it (`wait`) or leaves it for later. */
  #writeDone(wait: boolean): void | Promise<void> {
    const done = this.#done;
    if (done.count === 0) return;
    const last = done.lastId;
    if (this.partial === undefined) {
      const next = this.ring.tryWrite(this.#position, RecordKind.Done, 0, this.#doneFlags, last, done.payload());
      if (next >= 0) {
        this.#position = next;
        done.count = 0;
        return;
      }
      if (!wait) return;
    }
    const payload = done.take().slice(); // the list refills while we wait
    const partial = this.partial?.take();
    if (partial !== undefined) {
      // Right before the Done of exactly the items it covers; the engine keeps it until it reads that Done.
      const writing = this.write(RecordKind.Partial, 0, 0, last, partial);
      const done = () => this.write(RecordKind.Done, 0, this.#doneFlags, last, payload);
      if (writing !== undefined) return writing.then(done);
    }
    return this.write(RecordKind.Done, 0, this.#doneFlags, last, payload);
  }

  async #writeWhenRoom(kind: number, stage: number, flags: number, id: number, bytes: Uint8Array): Promise<void> {
    for (;;) {
      if (this.ring.closed) process.exit(0);
      this.flush(); // the engine can only free room it can see
      const released = this.ring.readPosition;
      const next = this.ring.tryWrite(this.#position, kind, stage, flags, id, bytes);
      if (next >= 0) {
        this.#position = next;
        return;
      }
      await this.ring.waitForRoom(released);
    }
  }

  #tooLarge(size: number): ItemTooLargeError {
    const limit = this.maxItemBytes;
    const message = `its output is ${size} bytes encoded, over the limit of ${limit} bytes (maxItemBytes, --max-item)`;
    return new ItemTooLargeError(message, { size, limit });
  }

  /** Too large for the ring: the bytes go by message, a 4-byte placeholder keeps their place in order. */
  #writeOversize(kind: number, stage: number, flags: number, id: number, bytes: Uint8Array): void | Promise<void> {
    return this.#writeOversizeHeaded(kind, stage, flags, id, EMPTY, bytes);
  }

  /**
   * The same for an item encoded as a head and what follows it: bytes as they are, or a string's UTF-8
   * (its head made here, once its length is known), written straight into the message's memory.
   */
  #writeOversizeHeaded(
    kind: number,
    stage: number,
    flags: number,
    id: number,
    head: Uint8Array | undefined,
    body: Uint8Array | string,
  ): void | Promise<void> {
    const length = typeof body === "string" ? Buffer.byteLength(body, "utf8") : body.length;
    head ??= stringHead(length);
    const size = head.length + length;
    if (size > this.maxItemBytes && kind === RecordKind.Output) throw this.#tooLarge(size);
    const target = Buffer.allocUnsafeSlow(size); // its own memory, every byte written below
    target.set(head);
    if (typeof body !== "string") target.set(body, head.length);
    else {
      const written = target.write(body, head.length, "utf8");
      if (written !== length) throw new Error(`a string's UTF-8 took ${written} bytes where ${length} were counted`);
    }
    return this.#post(kind, stage, flags, id, target.buffer as ArrayBuffer);
  }

  /** Sends an oversize record's bytes (memory of their own, moved to the engine) and writes its placeholder. */
  #post(kind: number, stage: number, flags: number, id: number, bytes: ArrayBuffer): void | Promise<void> {
    const ref = this.#nextRef++;
    this.post({ type: "oversize-output", ref, bytes }, [bytes]);
    const placeholder = new Uint8Array(4);
    new DataView(placeholder.buffer).setUint32(0, ref, true);
    return this.write(kind, stage, flags | FLAG_OVERSIZE, id, placeholder);
  }
}
