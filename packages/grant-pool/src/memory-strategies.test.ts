import { createRegionsFixture, createSimFixture } from './memory-strategy-fixtures.js';
import { describeMemoryStrategy } from './memory-strategy-suite.js';

describeMemoryStrategy('grant-map', () => createSimFixture('grant-map'));
describeMemoryStrategy('grant-copy', () => createSimFixture('grant-copy'));
describeMemoryStrategy('persistent-pool', () => createSimFixture('persistent-pool'));
describeMemoryStrategy('foreign', () => createSimFixture('foreign'));
describeMemoryStrategy('regions', () => createRegionsFixture());
