import { type DescMessage, fromBinary, type Message } from "@bufbuild/protobuf";
import type { EventCatalog, EventTypeEntry } from "../catalog/catalog.js";
import type { FilterInput } from "../filtering/cel-filter.js";

/** The envelope fields every stored event has, with the payload in protobuf binary. */
export interface EventFields {
  id: string;
  type: string;
  source: string;
  subject: string;
  time: Date;
  attributes: Record<string, string>;
  payload: Uint8Array;
  /**
   * The payload already decoded as its type's message, when the publish that wrote it had it
   * (a JSON publish parses it to encode it), with the message type it was decoded as.
   */
  decoded?: { schema: DescMessage; message: Message } | undefined;
}

/** A row of the log as the database returns it. */
export interface EventRow extends EventFields {
  sequence: string | bigint | number;
}

/**
 * An event read from the log. The payload stays binary until someone needs it decoded (a CEL
 * filter reading `data`, or a JSON subscriber); the decoded message is then shared by every
 * subscriber of this node.
 */
export class StoredEvent implements FilterInput {
  readonly sequence: bigint;
  readonly id: string;
  readonly type: string;
  readonly source: string;
  readonly subject: string;
  readonly time: Date;
  readonly attributes: Record<string, string>;
  readonly payload: Uint8Array;
  readonly #catalog: EventCatalog;
  #message: Message | undefined;
  /** What the publish decoded (see EventFields.decoded); used while the type's schema is the same. */
  #decoded: EventFields["decoded"];
  #rendered: Map<string, unknown> | undefined;

  constructor(row: EventRow, catalog: EventCatalog) {
    this.sequence = BigInt(row.sequence);
    this.id = row.id;
    this.type = row.type;
    this.source = row.source;
    this.subject = row.subject;
    this.time = row.time;
    this.attributes = row.attributes;
    this.payload = row.payload;
    this.#catalog = catalog;
    this.#decoded = row.decoded;
  }

  /** Its type in the catalog: looked up on use, so a type registered after the read is found. */
  get entry(): EventTypeEntry | undefined {
    return this.#catalog.get(this.type);
  }

  /**
   * A rendering of this event (its API form for one payload format, a webhook body), made once
   * and shared by every subscriber and endpoint of this node: fan-out must not convert it per
   * subscriber. The render function gets its arguments passed along rather than closing over
   * them: this runs once per subscriber and event, where a closure made per call showed in
   * profiles. It must not return undefined.
   */
  renderedWith<T, A, B>(key: string, render: (event: StoredEvent, a: A, b: B) => T, a: A, b: B): T {
    this.#rendered ??= new Map();
    let value = this.#rendered.get(key) as T | undefined;
    if (value === undefined) {
      value = render(this, a, b);
      this.#rendered.set(key, value);
    }
    return value;
  }

  /** The payload as its type's message. */
  data(): Message {
    if (!this.#message) {
      const entry = this.entry;
      if (!entry) throw new Error(`event type "${this.type}" is not in the catalog`);
      // An event this node just committed from JSON need not be decoded again: the same bytes
      // decode to the same message, unless its type's schema changed in between.
      this.#message = this.#decoded?.schema === entry.message ? this.#decoded.message : fromBinary(entry.message, this.payload);
      this.#decoded = undefined;
    }
    return this.#message;
  }
}
