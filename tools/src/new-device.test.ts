import { spawnSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deviceNames, renameTemplate, scaffoldDevice } from './new-device.js';
import { runForTest } from './testing/run-cli.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));
let root: string;

/** A throw-away workspace holding a copy of the real template, so the scaffold touches nothing here. */
async function tempWorkspace(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'xvio-new-device-'));
  await mkdir(join(dir, 'packages'), { recursive: true });
  await cp(join(repo, 'packages', 'dev-template'), join(dir, 'packages', 'dev-template'), {
    recursive: true,
    filter: (source) => !source.includes('node_modules'),
  });
  await cp(join(repo, 'tsconfig.base.json'), join(dir, 'tsconfig.base.json'));
  await writeFile(join(dir, 'pnpm-workspace.yaml'), 'packages:\n  - "packages/*"\n');
  await writeFile(join(dir, 'CODEOWNERS'), '/tools/ @xvio/cli\n');
  return dir;
}

beforeAll(async () => {
  root = await tempWorkspace();
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('device names', () => {
  it('spells a name the ways the template uses it', () => {
    expect(deviceNames('sound-card')).toEqual({
      kebab: 'sound-card',
      camel: 'soundCard',
      pascal: 'SoundCard',
      upper: 'SOUND_CARD',
      snake: 'sound_card',
    });
  });

  it('renames types, constants, functions, metric names and prose', () => {
    const names = deviceNames('sound-card');
    expect(
      renameTemplate(
        "class TemplateDevice; TEMPLATE_DEVICE_ID; parseTemplateConfig; templateConfigSchema; template_requests; 'template0'; @xvio/dev-template; ./template-wire.js",
        names,
      ),
    ).toBe(
      "class SoundCardDevice; SOUND_CARD_DEVICE_ID; parseSoundCardConfig; soundCardConfigSchema; sound_card_requests; 'sound-card0'; @xvio/dev-sound-card; ./sound-card-wire.js",
    );
  });

  it('refuses names that are not package names, and reserved ones', () => {
    expect(() => deviceNames('Sound')).toThrow(
      "device name 'Sound' is not valid: use lower-case letters and digits, words joined by '-' (e.g. sound or sound-card)",
    );
    expect(() => deviceNames('sound--card')).toThrow("device name 'sound--card' is not valid");
    expect(() => deviceNames('template')).toThrow("device name 'template' is reserved");
  });
});

describe('xvio new-device', () => {
  it('scaffolds a package whose own tests and typecheck pass right away', async () => {
    const result = await runForTest(['new-device', 'beeper', '--root', root, '--owner', '@audio-team']);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(result.stdout).toContain('created @xvio/dev-beeper:\n  packages/dev-beeper/README.md\n');
    const dir = join(root, 'packages', 'dev-beeper');
    const manifest = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as Record<string, unknown>;
    expect(manifest.name).toBe('@xvio/dev-beeper');
    expect(manifest.version).toBe('0.1.0');
    for (const file of [
      'index.ts',
      'beeper-device.ts',
      'beeper-wire.ts',
      'beeper-host.ts',
      'beeper-config.ts',
      'beeper-metrics.ts',
    ]) {
      const text = await readFile(join(dir, 'src', file), 'utf8');
      expect(text).not.toMatch(/template/i);
    }
    expect(await readFile(join(dir, 'README.md'), 'utf8')).toMatch(
      /^# @xvio\/dev-beeper\n\n## Description\n[\s\S]*## Usage\n[\s\S]*## Options\n[\s\S]*## Examples\n[\s\S]*## Limitations\n/,
    );
    expect(await readFile(join(root, 'CODEOWNERS'), 'utf8')).toBe(
      '/tools/ @xvio/cli\n/packages/dev-beeper/ @audio-team\n',
    );
    expect(await readFile(join(root, '.changeset', 'dev-beeper-scaffold.md'), 'utf8')).toBe(
      '---\n"@xvio/dev-beeper": minor\n---\n\nNew beeper device package, scaffolded from @xvio/dev-template.\n',
    );
    // What `pnpm install` would link: the template's dependencies, and the root's tools above.
    await symlink(join(repo, 'packages', 'dev-template', 'node_modules'), join(dir, 'node_modules'));
    await symlink(join(repo, 'node_modules'), join(root, 'node_modules'));
    const tests = spawnSync(process.execPath, [join(repo, 'node_modules', 'vitest', 'vitest.mjs'), 'run'], {
      cwd: dir,
      encoding: 'utf8',
      env: { ...process.env, CI: 'true', NO_COLOR: '1' },
    });
    expect(tests.status, tests.stdout + tests.stderr).toBe(0);
    expect(tests.stdout).toMatch(/Tests\s+\d+ passed/);
    const typecheck = spawnSync(
      process.execPath,
      [join(repo, 'node_modules', 'typescript', 'bin', 'tsc'), '--noEmit', '-p', '.'],
      {
        cwd: dir,
        encoding: 'utf8',
      },
    );
    expect(typecheck.status, typecheck.stdout + typecheck.stderr).toBe(0);
  }, 120_000);

  it('refuses to overwrite an existing package', async () => {
    await scaffoldDevice({ root, name: 'twice', owner: '@x' });
    const result = await runForTest(['new-device', 'twice', '--root', root]);
    expect(result).toEqual({ status: 2, stdout: '', stderr: 'xvio: packages/dev-twice already exists\n' });
  });

  it('rejects a bad name, a bad owner and a missing name with exact messages', async () => {
    expect(await runForTest(['new-device', 'Bad_Name', '--root', root])).toEqual({
      status: 2,
      stdout: '',
      stderr:
        "xvio: device name 'Bad_Name' is not valid: use lower-case letters and digits, words joined by '-' (e.g. sound or sound-card)\n",
    });
    expect((await runForTest(['new-device', 'okname', '--root', root, '--owner', 'nobody'])).stderr).toBe(
      "xvio: --owner 'nobody' is not a CODEOWNERS owner (@user, @org/team or an e-mail address)\n",
    );
    expect((await runForTest(['new-device'])).stderr).toBe(
      "error: missing required argument 'name'\n(run 'xvio new-device --help' for usage)\n",
    );
  });

  it('says when there is no template', async () => {
    const empty = await mkdtemp(join(tmpdir(), 'xvio-empty-'));
    const result = await runForTest(['new-device', 'x', '--root', empty]);
    await rm(empty, { recursive: true });
    expect(result).toEqual({
      status: 7,
      stdout: '',
      stderr: 'xvio: no device template at packages/dev-template\n',
    });
  });
});
