// Entry of the benchmark's worker threads: workers do not inherit tsx's loader, so it is
// registered here before the TypeScript benchmark module is loaded.
import { register } from 'tsx/esm/api';

register();
await import('./virtqueue.bench.ts');
