// The guest's TCP peer, run inside the test's network namespace (`ip netns exec <ns> node
// --import tsx net-peer.ts <sink port> <source port> <source bytes>`):
//   sink    reads everything a connection sends; after the sender's FIN it answers
//           "<md5> <bytes>\n" and closes, so the guest checks what arrived;
//   source  sends <source bytes> random bytes, then closes.
// Every finished transfer is a line `XVIO-PEER {json}` on stdout with its md5, byte count and
// the seconds from the first to the last byte as seen here. Prints XVIO-PEER-READY when both
// ports listen; SIGTERM ends it.
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:net';

export interface PeerTransfer {
  kind: 'sink' | 'source';
  md5: string;
  bytes: number;
  /** First to last byte, seconds (host clock). */
  seconds: number;
  /** When it finished, ms since the epoch. */
  endedAt: number;
}

const [sinkPort, sourcePort, sourceBytes] = process.argv.slice(2, 5).map(Number);
if (!sinkPort || !sourcePort || sourceBytes === undefined || !(sourceBytes >= 0)) {
  console.error('usage: net-peer.ts <sink port> <source port> <source bytes>');
  process.exit(2);
}

const report = (transfer: PeerTransfer) => process.stdout.write(`XVIO-PEER ${JSON.stringify(transfer)}\n`);

// The guest half-closes (busybox nc shuts its write side at EOF of stdin) and still reads
// the answer: keep our write side open past its FIN.
const sink = createServer({ allowHalfOpen: true }, (socket) => {
  const hash = createHash('md5');
  let bytes = 0;
  let first = 0;
  socket.on('data', (chunk: Buffer) => {
    if (bytes === 0) first = performance.now();
    bytes += chunk.length;
    hash.update(chunk);
  });
  socket.on('end', () => {
    const seconds = bytes === 0 ? 0 : (performance.now() - first) / 1000;
    const md5 = hash.digest('hex');
    report({ kind: 'sink', md5, bytes, seconds, endedAt: Date.now() });
    socket.end(`${md5} ${bytes}\n`);
  });
  socket.on('error', (error) => console.error(`peer sink: ${error.message}`));
});

const payload = randomBytes(sourceBytes);
const payloadMd5 = createHash('md5').update(payload).digest('hex');
const source = createServer({ allowHalfOpen: true }, (socket) => {
  const started = performance.now();
  // What the guest sends (nothing, then its FIN) is read and dropped.
  socket.resume();
  socket.end(payload);
  // 'close' comes after the guest has taken every byte and closed its side too.
  socket.on('close', (hadError) => {
    if (hadError) return;
    report({
      kind: 'source',
      md5: payloadMd5,
      bytes: payload.length,
      seconds: (performance.now() - started) / 1000,
      endedAt: Date.now(),
    });
  });
  socket.on('error', (error) => console.error(`peer source: ${error.message}`));
});

function listen(server: Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '0.0.0.0', () => resolve());
  });
}

await Promise.all([listen(sink, sinkPort), listen(source, sourcePort)]);
process.stdout.write('XVIO-PEER-READY\n');
process.on('SIGTERM', () => {
  sink.close();
  source.close();
  process.exit(0);
});
