import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { silentMp3, toneWav } from '@mfa/testing';
import { checkRecording } from './recording-format.js';

describe('voice recordings: what a call can play, judged by the bytes', () => {
  it('accepts a WAV and an MP3 with their durations', async () => {
    const wav = await checkRecording(toneWav(3));
    assert.deepEqual(wav, { ok: true, meta: { format: 'wav', contentType: 'audio/wav', durationSeconds: 3 }, warnings: [] });
    const mp3 = await checkRecording(silentMp3(4));
    assert.equal(mp3.ok, true);
    assert.equal(mp3.ok && mp3.meta.format, 'mp3');
    assert.equal(mp3.ok && mp3.meta.contentType, 'audio/mpeg');
    assert.ok(mp3.ok && Math.abs(mp3.meta.durationSeconds - 4) < 0.1, JSON.stringify(mp3));
  });

  it('warns about a recording longer than 20 s, and accepts it', async () => {
    const long = await checkRecording(silentMp3(30));
    assert.equal(long.ok, true);
    assert.match(long.ok ? long.warnings.join() : '', /lasts 30(\.\d)? s; keep it under 20 s/);
  });

  it('refuses files that are not WAV or MP3 whatever they claim, empty, truncated or over 1 MB', async () => {
    const gif = Buffer.concat([Buffer.from('GIF89a', 'ascii'), Buffer.alloc(64)]);
    const cases: Array<[string, Buffer, RegExp]> = [
      ['a text file', Buffer.from('RIFF? no, just text pretending to be greeting.wav\n'), /not a WAV or MP3 recording/],
      ['a GIF image named greeting.wav', gif, /not a WAV or MP3 recording \(its content is image\/gif\)/],
      ['nothing', Buffer.alloc(0), /empty/],
      ['a WAV header with no samples', toneWav(0), /holds no audio|cannot be read/],
      ['a WAV over 1 MB', toneWav(70), /larger than 1048576 bytes/],
    ];
    for (const [name, bytes, problem] of cases) {
      const checked = await checkRecording(bytes);
      assert.equal(checked.ok, false, name);
      assert.match(checked.ok ? '' : checked.problem, problem, name);
    }
  });
});
