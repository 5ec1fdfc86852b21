import { fileTypeFromBuffer } from 'file-type';
import { parseBuffer } from 'music-metadata';
import { MAX_VOICE_MESSAGE_BYTES, RECOMMENDED_VOICE_MESSAGE_SECONDS } from '@mfa/contracts';
import type { RecordingMeta } from '../adapters/voice/recording-store.js';

/** What Twilio's `<Play>` plays and the seeds allow: WAV and MP3, told apart by their bytes. */
const PLAYABLE: Record<string, RecordingMeta['format']> = { wav: 'wav', mp3: 'mp3' };
const CONTENT_TYPES: Record<RecordingMeta['format'], string> = { wav: 'audio/wav', mp3: 'audio/mpeg' };

export type RecordingCheck = { ok: true; meta: RecordingMeta; warnings: string[] } | { ok: false; problem: string };

/**
 * Whether an upload is a recording a call can play: at most 1 MB, WAV or MP3 by its content (the
 * file name, and whatever type an uploader claims, are never asked), and readable to its end as
 * that format, with a duration. Longer than 20 s is accepted with a warning, as the seeds advise.
 */
export async function checkRecording(bytes: Uint8Array): Promise<RecordingCheck> {
  if (bytes.length === 0) return { ok: false, problem: 'the file is empty' };
  if (bytes.length > MAX_VOICE_MESSAGE_BYTES) return { ok: false, problem: `the file is larger than ${MAX_VOICE_MESSAGE_BYTES} bytes (1 MB)` };
  const detected = await fileTypeFromBuffer(bytes);
  const format = detected ? PLAYABLE[detected.ext] : undefined;
  if (!format) return { ok: false, problem: `the file is not a WAV or MP3 recording (its content is ${detected ? detected.mime : 'of no known type'})` };
  let duration: number | undefined;
  try {
    const parsed = await parseBuffer(bytes, { mimeType: CONTENT_TYPES[format], size: bytes.length }, { duration: true, skipCovers: true });
    duration = parsed.format.duration;
  } catch (error) {
    return { ok: false, problem: `the ${format.toUpperCase()} file cannot be read: ${(error as Error).message}`.slice(0, 300) };
  }
  if (duration === undefined || !Number.isFinite(duration) || duration <= 0) return { ok: false, problem: `the ${format.toUpperCase()} file holds no audio` };
  const durationSeconds = Math.round(duration * 10) / 10;
  const warnings = durationSeconds > RECOMMENDED_VOICE_MESSAGE_SECONDS ? [`the recording lasts ${durationSeconds} s; keep it under ${RECOMMENDED_VOICE_MESSAGE_SECONDS} s`] : [];
  return { ok: true, meta: { format, contentType: CONTENT_TYPES[format], durationSeconds }, warnings };
}
