import { createSocket, type Socket } from 'node:dgram';
import type { Logger } from '@mfa/telemetry';
import type { HealthCheck } from '@mfa/service-kit';
import type { RadiusService } from '../application/radius.service.js';
import { kernelDrops } from '../adapters/socket-drops.js';
import { countKernelDrops } from '../application/metrics.js';

/**
 * The UDP socket RADIUS arrives on (RADIUS_BIND, RADIUS_PORT). Each datagram is handed to the
 * RADIUS front; its answer, when there is one, goes back to the address and port it came from.
 * Stopping closes the socket to new datagrams only after the answers under way were sent (up to
 * `drainMs`), so a rolling restart loses no sign-in that was already decided.
 *
 * The socket's receive buffer (RADIUS_RECEIVE_BUFFER_BYTES) is what a burst can queue while the
 * process is busy: the default of the kernel (208 KiB on Linux, about 250 small datagrams) is
 * under a tenth of a second of a busy VPN concentrator's morning, and what overflows it is dropped
 * by the kernel, unseen, until the NAS retransmits seconds later. Those drops are counted in
 * mfa_radius_drops_total{reason="receive_buffer_full"} (read from the kernel at each scrape).
 */
export class RadiusListener implements HealthCheck {
  readonly name = 'radius';
  private socket: Socket | undefined;
  private accepting = false;
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(
    private readonly service: RadiusService,
    private readonly bind: { address: string; port: number; receiveBufferBytes: number },
    private readonly log: Logger,
  ) {}

  async start(): Promise<{ address: string; port: number }> {
    const type = this.bind.address.includes(':') ? 'udp6' : 'udp4';
    const socket = createSocket({ type, reuseAddr: false, recvBufferSize: this.bind.receiveBufferBytes });
    socket.on('message', (bytes, remote) => this.onDatagram(socket, bytes, remote.address, remote.port));
    socket.on('error', (error) => this.log.error('radius socket error', { error }));
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(this.bind.port, this.bind.address, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    this.socket = socket;
    this.accepting = true;
    const address = socket.address();
    // Linux reports twice what it granted (the doubling covers its bookkeeping), capped by
    // net.core.rmem_max: less than asked means the cap.
    const granted = socket.getRecvBufferSize();
    if (granted < this.bind.receiveBufferBytes) {
      this.log.warn('the kernel gave the RADIUS socket a smaller receive buffer than RADIUS_RECEIVE_BUFFER_BYTES asks: bursts beyond it are dropped; raise net.core.rmem_max (docs/radius.md)', {
        askedBytes: this.bind.receiveBufferBytes,
        grantedBytes: granted,
      });
    }
    countKernelDrops(() => kernelDrops(type, address.port));
    return { address: address.address, port: address.port };
  }

  private onDatagram(socket: Socket, bytes: Buffer, address: string, port: number): void {
    if (!this.accepting) return;
    let answer: Promise<Buffer | undefined> | undefined;
    try {
      answer = this.service.receive({ bytes, address, port });
    } catch (error) {
      this.log.error('radius datagram failed', { error });
      return;
    }
    if (!answer) return;
    // Settled once the answer has left (the send's callback), so a shutdown that waits for it does
    // not close the socket under a datagram still queued.
    const sent = answer
      .then(
        (reply) =>
          reply &&
          new Promise<void>((resolve) =>
            socket.send(reply, port, address, (error) => {
              if (error) this.log.warn('radius answer not sent', { error, to: address });
              resolve();
            }),
          ),
      )
      .catch((error: unknown) => this.log.error('radius answer failed', { error }))
      .finally(() => this.inFlight.delete(sent));
    this.inFlight.add(sent);
  }

  async check(): Promise<void> {
    if (!this.socket || !this.accepting) throw new Error('not listening');
    this.socket.address();
  }

  async stop(drainMs: number): Promise<void> {
    this.accepting = false;
    const socket = this.socket;
    this.socket = undefined;
    if (!socket) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...this.inFlight]), new Promise((resolve) => (timer = setTimeout(resolve, drainMs)))]);
    clearTimeout(timer);
    await new Promise<void>((resolve) => socket.close(() => resolve()));
  }
}
