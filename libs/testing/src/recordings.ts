/**
 * Audio files for voice recording tests, built byte by byte so their format is known without a
 * tool: a PCM WAV of a tone, and an MPEG-1 Layer III stream of silent frames.
 */

/** A mono 16-bit PCM WAV of `seconds` of a 440 Hz tone (8 kHz: 16 KB a second). */
export function toneWav(seconds: number, sampleRate = 8000): Buffer {
  const samples = Math.round(seconds * sampleRate);
  const data = Buffer.alloc(samples * 2);
  for (let i = 0; i < samples; i++) data.writeInt16LE(Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / sampleRate)), i * 2);
  const header = Buffer.alloc(44);
  header.write('RIFF', 0, 'ascii');
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVE', 8, 'ascii');
  header.write('fmt ', 12, 'ascii');
  header.writeUInt32LE(16, 16); // fmt chunk size
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(1, 22); // mono
  header.writeUInt32LE(sampleRate, 24);
  header.writeUInt32LE(sampleRate * 2, 28); // byte rate
  header.writeUInt16LE(2, 32); // block align
  header.writeUInt16LE(16, 34); // bits per sample
  header.write('data', 36, 'ascii');
  header.writeUInt32LE(data.length, 40);
  return Buffer.concat([header, data]);
}

/**
 * `seconds` of MPEG-1 Layer III at 128 kbit/s, 44.1 kHz, mono: 417-byte frames (header FF FB 90 C0,
 * side information and main data zero: silence), 1152 samples each.
 */
export function silentMp3(seconds: number): Buffer {
  const frames = Math.ceil((seconds * 44_100) / 1152);
  const frame = Buffer.alloc(417);
  frame.set([0xff, 0xfb, 0x90, 0xc0], 0);
  return Buffer.concat(Array.from({ length: frames }, () => frame));
}
