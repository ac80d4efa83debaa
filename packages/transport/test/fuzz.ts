// `pnpm fuzz`: the virtqueue properties of virtqueue-properties.ts with a large budget.
//
//   pnpm fuzz                      1,000,000 cases in all (split and packed, hostile and accounting)
//   pnpm fuzz --cases 5000000      another budget (or XVIO_FUZZ_CASES / XVIO_FUZZ_RUNS)
//   pnpm fuzz --seed 42            reproduce a run
//
// Prints cases/s for each property; exits 1 with the shrunk counterexample on a failure.

import fc from 'fast-check';
import { properties } from './virtqueue-properties.js';

function option(name: string): string | undefined {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? process.argv[index + 1] : undefined;
}

const total = Number(
  option('cases') ?? process.env.XVIO_FUZZ_CASES ?? process.env.XVIO_FUZZ_RUNS ?? 1_000_000,
);
const seed = Number(option('seed') ?? Date.now() % 2 ** 31);
if (!Number.isInteger(total) || total < properties.length) {
  console.error(`fuzz: --cases must be an integer >= ${properties.length}`);
  process.exit(2);
}
const perProperty = Math.ceil(total / properties.length);
console.log(`fuzz: ${perProperty * properties.length} cases, seed ${seed}`);

let failed = false;
const started = performance.now();
for (const { name, property } of properties) {
  const start = performance.now();
  const result = fc.check(property(), { numRuns: perProperty, seed, endOnFailure: true });
  const seconds = (performance.now() - start) / 1000;
  const rate = Math.round(result.numRuns / seconds);
  console.log(
    `${name.padEnd(52)} ${String(result.numRuns).padStart(9)} cases  ${rate.toLocaleString('en')} cases/s`,
  );
  if (result.failed) {
    failed = true;
    console.error(fc.defaultReportMessage(result));
  }
}
const seconds = (performance.now() - started) / 1000;
console.log(`fuzz: ${failed ? 'FAILED' : 'ok'} in ${seconds.toFixed(1)} s`);
process.exit(failed ? 1 : 0);
