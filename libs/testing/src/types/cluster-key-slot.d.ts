// cluster-key-slot (the slot function ioredis itself uses) ships no types.
declare module 'cluster-key-slot' {
  /** Redis Cluster hash slot (CRC16 of the key, or of its `{hash tag}`, mod 16384). */
  export default function calculateSlot(key: string | Buffer): number;
}
