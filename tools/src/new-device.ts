import { appendFile, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { CliError } from './cli-errors.js';

/** Names a device package may take: lower-case words joined by hyphens (`sound`, `sound-card`). */
const NAME_PATTERN = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;
const RESERVED = new Set(['template', 'core', 'transport', 'cli']);
const SKIPPED = new Set(['node_modules', 'dist', '.turbo', 'coverage', 'CHANGELOG.md']);

export interface DeviceNames {
  /** `sound-card`: files, package name, strings. */
  readonly kebab: string;
  /** `soundCard`: functions and variables. */
  readonly camel: string;
  /** `SoundCard`: classes and types. */
  readonly pascal: string;
  /** `SOUND_CARD`: constants. */
  readonly upper: string;
  /** `sound_card`: metric names. */
  readonly snake: string;
}

export function deviceNames(name: string): DeviceNames {
  if (!NAME_PATTERN.test(name)) {
    throw new CliError(
      'invalid-arguments',
      `device name '${name}' is not valid: use lower-case letters and digits, words joined by '-' (e.g. sound or sound-card)`,
    );
  }
  if (RESERVED.has(name)) throw new CliError('invalid-arguments', `device name '${name}' is reserved`);
  const words = name.split('-');
  const capital = (word: string) => word.charAt(0).toUpperCase() + word.slice(1);
  return {
    kebab: name,
    camel: words[0]! + words.slice(1).map(capital).join(''),
    pascal: words.map(capital).join(''),
    upper: words.join('_').toUpperCase(),
    snake: words.join('_'),
  };
}

/**
 * Renames every spelling of `template` the way the template package uses it: `Template`
 * (types), `TEMPLATE` (constants), `templateX` (functions), `template_x` (metric names) and
 * `template` elsewhere (files, package name, strings, prose).
 */
export function renameTemplate(text: string, names: DeviceNames): string {
  return text
    .replace(/TEMPLATE/g, names.upper)
    .replace(/Template/g, names.pascal)
    .replace(/template(?=[A-Z])/g, names.camel)
    .replace(/template(?=_)|(?<=_)template/g, names.snake)
    .replace(/template/g, names.kebab);
}

async function listFiles(dir: string, base = dir): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (SKIPPED.has(entry.name)) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(path, base)));
    else if (entry.isFile()) out.push(relative(base, path));
  }
  return out.sort();
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

function readme(names: DeviceNames): string {
  return `# @xvio/dev-${names.kebab}

## Description

The ${names.kebab} virtio device for xvio, scaffolded from \`@xvio/dev-template\`. Until it is
written it behaves like the template: one request queue whose payloads its host transforms.
Replace, in this order:

1. \`src/${names.kebab}-wire.ts\`: the spec's device ID (the scaffold keeps the template's
   placeholder), queues, feature bits and structs, each with its spec section.
2. \`src/${names.kebab}-host.ts\`: the host interface and an in-memory host that really works.
3. \`src/${names.kebab}-device.ts\`: the queue processing (\`serviceQueue\` + \`openChain\`).
4. \`src/${names.kebab}-device.test.ts\`: one valid request in the conformance suite's \`exercise\`.

The rules of the template hold: guest bytes are copied then validated, a bad request is
answered and counted, a corrupted ring is reported with \`context.fail\`, nothing grows
with guest input.

## Usage

\`\`\`ts
import { ${names.pascal}Device, Memory${names.pascal}Host, parse${names.pascal}Config } from '@xvio/dev-${names.kebab}';

const device = new ${names.pascal}Device(new Memory${names.pascal}Host(0x20), parse${names.pascal}Config({ name: '${names.kebab}0' }));
\`\`\`

## Options

See \`src/${names.kebab}-config.ts\` (validated once with zod): \`name\`, \`queueSize\`,
\`maxRequestSize\`, \`key\`.

## Examples

\`\`\`sh
pnpm --filter @xvio/dev-${names.kebab} test
\`\`\`

## Limitations

A scaffold: it serves the template's protocol under a placeholder device ID until the
files above are rewritten for the real device. To serve it from the \`xvio\` CLI, add it to
the CLI's device registry.
`;
}

export interface NewDeviceOptions {
  /** The workspace root (holds pnpm-workspace.yaml and packages/). */
  readonly root: string;
  readonly name: string;
  /** CODEOWNERS owner of the new package. */
  readonly owner: string;
}

export interface NewDeviceResult {
  readonly packageDir: string;
  readonly files: readonly string[];
}

/** Copies packages/dev-template to packages/dev-NAME with every identifier renamed. */
export async function scaffoldDevice(options: NewDeviceOptions): Promise<NewDeviceResult> {
  const names = deviceNames(options.name);
  if (!/^@[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)?$|^[^@\s]+@[^@\s]+$/.test(options.owner)) {
    throw new CliError(
      'invalid-arguments',
      `--owner '${options.owner}' is not a CODEOWNERS owner (@user, @org/team or an e-mail address)`,
    );
  }
  const templateDir = join(options.root, 'packages', 'dev-template');
  if (!(await exists(join(templateDir, 'package.json')))) {
    throw new CliError(
      'io-failed',
      `no device template at ${relative(options.root, templateDir) || templateDir}`,
    );
  }
  const packageDir = join(options.root, 'packages', `dev-${names.kebab}`);
  if (await exists(packageDir)) {
    throw new CliError('invalid-arguments', `packages/dev-${names.kebab} already exists`);
  }
  const files = await listFiles(templateDir);
  const written: string[] = [];
  for (const file of files) {
    const target = renameTemplate(file, names);
    let text = await readFile(join(templateDir, file), 'utf8');
    if (file === 'README.md') {
      text = readme(names);
    } else if (file === 'package.json') {
      const manifest = JSON.parse(renameTemplate(text, names)) as Record<string, unknown>;
      manifest.version = '0.1.0';
      manifest.description = `virtio ${names.kebab} device for xvio (scaffolded from @xvio/dev-template)`;
      text = `${JSON.stringify(manifest, null, 2)}\n`;
    } else {
      text = renameTemplate(text, names);
    }
    await mkdir(dirname(join(packageDir, target)), { recursive: true });
    await writeFile(join(packageDir, target), text);
    written.push(join('packages', `dev-${names.kebab}`, target));
  }
  const codeowners = join(options.root, 'CODEOWNERS');
  const line = `/packages/dev-${names.kebab}/ ${options.owner}\n`;
  const current = (await exists(codeowners)) ? await readFile(codeowners, 'utf8') : '';
  if (!current.includes(`/packages/dev-${names.kebab}/ `)) {
    await appendFile(codeowners, `${current.length > 0 && !current.endsWith('\n') ? '\n' : ''}${line}`);
    written.push('CODEOWNERS');
  }
  await mkdir(join(options.root, '.changeset'), { recursive: true });
  const changeset = join('.changeset', `dev-${names.kebab}-scaffold.md`);
  await writeFile(
    join(options.root, changeset),
    `---\n"@xvio/dev-${names.kebab}": minor\n---\n\nNew ${names.kebab} device package, scaffolded from @xvio/dev-template.\n`,
  );
  written.push(changeset);
  return { packageDir, files: written };
}

/** The workspace root: the nearest directory upwards holding pnpm-workspace.yaml. */
export async function findWorkspaceRoot(from: string): Promise<string> {
  let dir = from;
  for (;;) {
    if (await exists(join(dir, 'pnpm-workspace.yaml'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) {
      throw new CliError(
        'io-failed',
        'not inside an xvio workspace (no pnpm-workspace.yaml above this directory); use --root',
      );
    }
    dir = parent;
  }
}
