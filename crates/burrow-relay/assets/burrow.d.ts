// TypeScript declarations for burrow.js (served by every relay at GET /burrow.js).

/** The relay protocol version the module speaks. */
export const PROTOCOL_VERSION: number;
/** The first four bytes of every signal. */
export const SIGNAL_MAGIC: Uint8Array;
/** The longest signal body, bytes. */
export const MAX_SIGNAL_BODY: number;
/** How far a signal's time may be from the page's clock, either way, ms. */
export const MAX_SKEW_MS: number;

export type SignalKind = "offer" | "answer" | "candidate" | "bye";

/** A signal that passed every check: signed by `from`, for this page, fresh and new. */
export interface Signal {
  kind: SignalKind;
  /** The sender's node id. */
  from: string;
  /** This page's node id. */
  to: string;
  session: bigint;
  seq: bigint;
  /** When the sender signed it, ms since the Unix epoch, by its clock. */
  unixMs: number;
  /** An SDP, a candidate (the JSON of an RTCIceCandidateInit), or a bye's reason. */
  body: string;
}

/** What became of the signals that came. */
export interface SignalStats {
  accepted: number;
  malformed: number;
  forged: number;
  misaddressed: number;
  stale: number;
  replayed: number;
}

/** Why a signal was dropped; `reason` names the SignalStats counter it went to. */
export class SignalError extends Error {
  reason: keyof SignalStats;
}

/** A record found by discover(), its signature checked. */
export interface Peer {
  nodeId: string;
  name: string | null;
  capabilities: string[];
  relays: string[];
  /** Connected to the relay asked, now. */
  online: boolean;
  /** That relay's observation: the share of its reputation window the key was connected there. */
  reputation: number;
}

export interface PublishOptions {
  namespaces?: string[];
  capabilities?: string[];
  name?: string | null;
  ttlSecs?: number;
}

export interface DiscoverOptions {
  require?: string[];
  minReputation?: number;
  online?: boolean;
}

/** What a relay's GET /stats says. */
export interface RelayStats {
  browser_clients: number;
  native_clients: number;
  frames_forwarded: number;
  signals_forwarded: number;
  bytes_forwarded: number;
  records: number;
  uptime_secs: number;
}

/** The longest message a connection carries, bytes. */
export const MAX_MESSAGE: number;
/** Messages in flight, unacknowledged, per connection. */
export const WINDOW: number;

export type Path = "relay" | "direct";

/** One end of a WebRTC candidate pair, as getStats reports it. */
export interface CandidateInfo {
  /** "host", "srflx", "prflx" or "relay". */
  type: string;
  address: string;
  port: number;
  protocol: string;
}

/** What a connection counts. */
export interface ConnectionStats {
  path: Path;
  /** Reliable messages sent (each once, however often it went). */
  sent: number;
  /** Reliable messages delivered in order. */
  received: number;
  /** Sends of a message again. */
  resent: number;
  bytesSent: number;
  bytesReceived: number;
  /** Reliable messages sent, and received, on the direct path. */
  sentDirect: number;
  receivedDirect: number;
  /** Messages handed to send() and not yet acknowledged. */
  pending: number;
}

/**
 * A connection with another node: reliable, ordered messages (and unreliable ones),
 * end-to-end encrypted; through the relay at first, on a WebRTC data channel once it is up.
 */
export class Connection {
  /** The other node's id. */
  readonly peer: string;
  readonly session: bigint;
  /** How messages go now. */
  readonly path: Path;
  /** Messages handed to send() and not yet acknowledged. */
  readonly pending: number;
  onmessage: ((bytes: Uint8Array, info: { reliable: boolean }) => void) | null;
  /** The path changed ("direct" once WebRTC is up; "relay" again if it fails). */
  onpathchange: ((path: Path) => void) | null;
  onclose: ((why: string) => void) | null;
  /** At most MAX_MESSAGE bytes; text is sent as UTF-8. Reliable by default; unreliable
   * messages arrive at most once, in any order. */
  send(data: Uint8Array | ArrayBuffer | string, options?: { reliable?: boolean }): void;
  stats(): ConnectionStats;
  /** The direct path's selected candidate pair, or null while there is none. */
  candidatePair(): Promise<{ local: CandidateInfo; remote: CandidateInfo } | null>;
  /** Ends the session; the peer is told with a signed bye. */
  close(): void;
}

export class Node {
  /** The relay's URL, as it knows itself. */
  readonly relay: string;
  /** This page's node id (52 base32 characters). */
  readonly nodeId: string;
  /** The page's key pair (its private key not extractable). */
  readonly key: CryptoKeyPair;
  /** The ICE servers of connections' direct paths; null: relayed only. */
  readonly iceServers: RTCIceServer[] | null;
  onsignal: ((signal: Signal) => void) | null;
  onbadsignal: ((error: SignalError) => void) | null;
  ondatagram: ((from: string, bytes: Uint8Array) => void) | null;
  onpeergone: ((nodeId: string) => void) | null;
  /** Another node dialled this page and the connection is up. */
  onconnection: ((conn: Connection) => void) | null;
  /** A connection to `nodeId`; rejects if it does not answer within 10 s. */
  dial(nodeId: string): Promise<Connection>;
  send(nodeId: string, bytes: Uint8Array): void;
  signal(nodeId: string, kind: SignalKind, body?: string, session?: bigint): Promise<{ session: bigint; seq: bigint }>;
  signalStats(): SignalStats;
  publish(options?: PublishOptions): Promise<unknown>;
  discover(namespace: string, options?: DiscoverOptions): Promise<Peer[]>;
  relayStats(): Promise<RelayStats>;
  close(): void;
}

export interface ConnectOptions {
  /** The relay's URL, as it knows itself. */
  relay: string;
  /** The name the page's key is kept under in IndexedDB. */
  keyName?: string;
  /** A key pair to use instead. */
  key?: CryptoKeyPair;
  /** Try direct WebRTC paths (default true). */
  webrtc?: boolean;
  /** ICE servers; default: the relay's GET /ice. */
  iceServers?: RTCIceServer[] | null;
}

export function connect(options: ConnectOptions): Promise<Node>;
export function loadKey(name?: string): Promise<CryptoKeyPair>;
export function nodeIdText(bytes: Uint8Array): string;
export function nodeIdBytes(text: string): Uint8Array;
export function signRecord(
  key: CryptoKeyPair,
  id: Uint8Array,
  record: { seq: number; expires: number; relays?: string[]; name?: string | null; capabilities?: string[] },
): Promise<Uint8Array>;
export function verifyRecord(bytes: Uint8Array, id: Uint8Array): Promise<boolean>;
export function encodeSignal(
  key: CryptoKeyPair,
  signal: { kind: SignalKind; from: Uint8Array; to: Uint8Array; session: bigint; seq: bigint; unixMs: number; body?: string },
): Promise<Uint8Array>;
export function decodeSignal(bytes: Uint8Array): Promise<Signal>;
export function looksLikeSignal(bytes: Uint8Array): boolean;
