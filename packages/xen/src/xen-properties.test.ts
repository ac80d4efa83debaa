// Property tests: hostile bytes on the xenstore wire and hostile grant references never
// break the simulator, and every failure is the typed error Xen would give.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GrantError, XenError } from './xen-errors.js';
import { GTF_permit_access } from './xen-grant-wire.js';
import { createXenSimulator } from './xen-sim.js';
import {
  encodeXsMessage,
  joinNulTerminated,
  readXsHeader,
  XENSTORE_PAYLOAD_MAX,
  XSD_SOCKMSG_SIZE,
  XsType,
} from './xenstore-wire.js';
import { SimXenstored } from './xenstored.js';

const message = fc.record({
  type: fc.oneof(fc.integer({ min: 0, max: 25 }), fc.constant(0xffff)),
  reqId: fc.nat(),
  txId: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 4 })),
  payload: fc.oneof(
    fc.uint8Array({ maxLength: 64 }),
    fc
      .array(fc.stringMatching(/^[a-z/@0-9 *.]{0,12}$/), { maxLength: 4 })
      .map((parts) => joinNulTerminated(parts)),
  ),
});

describe('xenstored under hostile input', () => {
  it('answers every message or drops the connection, and keeps serving others', () => {
    fc.assert(
      fc.property(
        fc.array(message, { maxLength: 40 }),
        fc.array(fc.integer({ min: 1, max: 50 }), { maxLength: 8 }),
        (messages, cuts) => {
          const daemon = new SimXenstored({ quota: { entriesPerDomain: 50 } });
          daemon.introduceDomain(0, 'Domain-0');
          daemon.introduceDomain(3, 'guest');
          const replies: number[] = [];
          let closed = false;
          const connection = daemon.openConnection(
            3,
            (bytes) => {
              let offset = 0;
              while (offset < bytes.length) {
                const header = readXsHeader(bytes, offset);
                expect(header.len).toBeLessThanOrEqual(XENSTORE_PAYLOAD_MAX);
                replies.push(header.type);
                offset += XSD_SOCKMSG_SIZE + header.len;
              }
            },
            () => {
              closed = true;
            },
          );
          const stream = new Uint8Array(
            messages.flatMap((m) => [...encodeXsMessage(m.type, m.reqId, m.txId, m.payload)]),
          );
          let offset = 0;
          for (const cut of cuts) {
            connection.receive(stream.subarray(offset, offset + cut));
            offset += cut;
          }
          connection.receive(stream.subarray(offset));
          expect(closed).toBe(false);
          // One reply per request (watch events come on top of them).
          expect(replies.filter((type) => type !== XsType.WATCH_EVENT).length).toBe(messages.length);
          // The daemon still serves a well-behaved client.
          const other: Uint8Array[] = [];
          daemon
            .openConnection(0, (bytes) => other.push(bytes))
            .receive(encodeXsMessage(XsType.READ, 1, 0, joinNulTerminated(['/local/domain/3/name'])));
          expect(new TextDecoder().decode(other[0]?.subarray(XSD_SOCKMSG_SIZE))).toBe('guest');
        },
      ),
      { numRuns: 150 },
    );
  });
});

describe('grant tables under hostile references', () => {
  it('fail with GrantError per op and leave every entry as the guest wrote it', async () => {
    const sim = createXenSimulator();
    const guest = sim.createDomain({ memoryBytes: 1 << 20, grantFrames: 1 });
    const dom0 = sim.services(0);
    const granted = [8, 9, 10].map((frame) =>
      guest.services().grants.grantAccess(0, frame, { readOnly: frame === 10 }),
    );
    const ref = fc.oneof(
      fc.constantFrom(...granted),
      fc.integer({ min: -5, max: 600 }),
      fc.constantFrom(Number.NaN, 2 ** 32, 1.5, Number.MAX_SAFE_INTEGER),
    );
    fc.assert(
      fc.property(
        fc.array(ref, { minLength: 1, maxLength: 6 }),
        fc.boolean(),
        fc.constantFrom(guest.domid, 0, 99),
        (refs, writable, domid) => {
          try {
            const mapping = dom0.grants.map({ domid, refs, writable });
            expect(domid).toBe(guest.domid);
            mapping.unmap();
          } catch (error) {
            expect(
              GrantError.isInstance(error) || (XenError.isInstance(error) && error.code === 'EINVAL'),
            ).toBe(true);
          }
          expect(dom0.grants.liveMappings()).toBe(0);
          for (const r of granted) expect(guest.grantEntry(r).flags & ~4).toBe(GTF_permit_access);
        },
      ),
      { numRuns: 300 },
    );
    await sim.close();
  });
});
