import { JetStreamApiCodes, JetStreamApiError, JetStreamError, type JetStreamManager } from '@nats-io/jetstream';

/**
 * JetStream errors, told apart by the client's error classes and the server's API error codes
 * (nats-server's errors.json), never by their messages, which change between releases.
 */
export const JetStreamCodes = {
  ...JetStreamApiCodes,
  /** JSClusterNoPeersErr: no server can take the stream or consumer right now. */
  ClusterNoPeers: 10005,
  /** JSClusterNotAvailErr: JetStream system temporarily unavailable. */
  ClusterNotAvailable: 10008,
  /** JSClusterNotLeaderErr: the stream or consumer has no leader (an election is under way). */
  ClusterNotLeader: 10009,
  /** JSStreamNameExistErr: a stream of that name exists (another instance created it first). */
  StreamNameExists: 10058,
  /** JSInsufficientResourcesErr: the servers lack the resources (or the peers) the stream asks for. */
  InsufficientResources: 10023,
  /** JSStreamReplicasNotSupportedErr: replicas > 1 on a server that is not clustered. */
  ReplicasNotSupported: 10074,
  /** JSStreamOfflineErr: the stream's replicas are not available. */
  StreamOffline: 10118,
  /** JSStreamMsgDeleteFailedF: a message delete failed; the description is the store's error. */
  StreamMsgDeleteFailed: 10057,
  /** JSSequenceNotFoundErrF: no message at that sequence (a delete racing another's). */
  SequenceNotFound: 10043,
} as const;

/** The server's API error code, when the error is a JetStream API error. */
export function jetStreamApiCode(error: unknown): number | undefined {
  return error instanceof JetStreamApiError ? error.code : undefined;
}

/** A conditional publish failed: the subject moved on since it was read (optimistic concurrency). */
export function isWrongLastSequence(error: unknown): boolean {
  const code = jetStreamApiCode(error);
  return code === JetStreamCodes.StreamWrongLastSequence || code === JetStreamCodes.StreamWrongLastSequenceUnknown;
}

export function isStreamOrConsumerNotFound(error: unknown): boolean {
  const code = jetStreamApiCode(error);
  return code === JetStreamCodes.StreamNotFound || code === JetStreamCodes.ConsumerNotFound;
}

/**
 * An object store that does not exist: nats.js's `Objm.open` reads the bucket's stream info and
 * answers a missing stream with a plain Error of its own, not the JetStream API's code.
 */
export function isObjectStoreNotFound(error: unknown): boolean {
  return isStreamOrConsumerNotFound(error) || (error instanceof Error && error.message === 'object store not found');
}

export function isNoMessageFound(error: unknown): boolean {
  return jetStreamApiCode(error) === JetStreamCodes.NoMessageFound;
}

/**
 * Deletes (with `erase`, overwriting its stored bytes) message `seq` of `stream`; false when it was
 * already gone (deleted, erased or purged by another instance first). The server answers a delete
 * of a missing message not with 10037 but with JSSequenceNotFoundErrF (10043) when two deletes race,
 * or JSStreamMsgDeleteFailedF (10057, "no message found") after the other finished, and 10057 also
 * carries real failures: so the message is looked up, and the error stands unless it is gone.
 */
export async function deleteMessageIfPresent(jsm: JetStreamManager, stream: string, seq: number, erase: boolean): Promise<boolean> {
  try {
    return await jsm.streams.deleteMessage(stream, seq, erase);
  } catch (error) {
    const code = jetStreamApiCode(error);
    if (code !== JetStreamCodes.StreamMsgDeleteFailed && code !== JetStreamCodes.SequenceNotFound && code !== JetStreamCodes.NoMessageFound) throw error;
    if ((await jsm.streams.getMessage(stream, { seq })) === null) return false;
    throw error;
  }
}

/** A stream cannot have the replicas asked for: no cluster, too few peers, no resources. */
export function isReplicasUnavailable(error: unknown): boolean {
  const code = jetStreamApiCode(error);
  return code === JetStreamCodes.ClusterNoPeers || code === JetStreamCodes.InsufficientResources || code === JetStreamCodes.ReplicasNotSupported;
}

export function isStreamNameInUse(error: unknown): boolean {
  return jetStreamApiCode(error) === JetStreamCodes.StreamNameExists;
}

const TRANSIENT_API_CODES: ReadonlySet<number> = new Set([
  JetStreamCodes.ClusterNoPeers,
  JetStreamCodes.ClusterNotAvailable,
  JetStreamCodes.ClusterNotLeader,
  JetStreamCodes.StreamOffline,
]);
/** Pull statuses that mean "not now": 408 request timeout, 409 leadership change, 503 no responders. */
const TRANSIENT_STATUS_CODES: ReadonlySet<number> = new Set([408, 409, 503]);

/** JetStream says it cannot serve right now (election, peers missing, no responders): try again later. */
export function isTransientJetStreamError(error: unknown): boolean {
  const code = jetStreamApiCode(error);
  if (code !== undefined) return TRANSIENT_API_CODES.has(code);
  // A JetStreamStatusError (a JetStreamError with the status code; the class itself is not exported).
  const status = error instanceof JetStreamError ? (error as JetStreamError & { code?: unknown }).code : undefined;
  return typeof status === 'number' && TRANSIENT_STATUS_CODES.has(status);
}
