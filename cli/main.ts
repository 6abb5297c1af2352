import { readFileSync } from "node:fs";
import { Command, CommanderError, Option } from "commander";
import { registerEvents } from "./commands/events.js";
import { registerExport } from "./commands/export.js";
import { registerKeys } from "./commands/keys.js";
import { registerPublish } from "./commands/publish.js";
import { registerServe } from "./commands/serve.js";
import { registerTail } from "./commands/tail.js";
import { registerTypes } from "./commands/types.js";
import { current } from "./context.js";
import { describeError, oneLine } from "./errors.js";
import { serverUrl } from "./parse.js";

const version = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;

/** The command tree. Settings given here (exitOverride, output, help) are inherited by every command. */
export function buildProgram(): { program: Command; active: () => Command } {
  const program = new Command("tidings");
  let active: Command = program;
  program
    .description("Tidings, the schema-first event hub: run the server, publish, tail, list, export, manage API keys.")
    .version(version, "-V, --version", "print the version")
    .addOption(new Option("--server <url>", "the Tidings server").env("TIDINGS_SERVER").default("http://127.0.0.1:7233").argParser(serverUrl))
    .addOption(new Option("--token <key>", "API key, sent as Authorization: Bearer <key>").env("TIDINGS_TOKEN"))
    .helpOption("-h, --help", "show help (with examples)")
    .configureHelp({ showGlobalOptions: true, sortSubcommands: false })
    .showSuggestionAfterError(true)
    .exitOverride()
    // Errors are printed once, as one line, by main(): commander must not print its own.
    .configureOutput({ outputError: () => {} })
    .hook("preSubcommand", (_parent, sub) => {
      active = sub;
    })
    .addHelpText(
      "after",
      `
Examples:
  $ tidings serve --port 7233 --data-dir .tidings/data
  $ tidings publish memory.created '{"memory_id": "m-1", "tier": "hot"}' --attr agent=helena
  $ tidings publish --batch events.jsonl
  $ tidings tail 'memory.*' --filter 'data.tier == "hot"'
  $ tidings events list 'risk.*' --descending --limit 10
  $ tidings types risk.alert
  $ tidings types push ./protos
  $ tidings export --format jsonl --output events.jsonl
  $ TIDINGS_SERVER=http://tidings.internal:7233 tidings tail
  $ tidings keys create --name "billing publisher" --scope publish=billing.* --token "$ADMIN_KEY"
  $ TIDINGS_TOKEN="$ADMIN_KEY" tidings keys list --all
  $ tidings keys revoke key_0192f5c3-7d1e-7cc0-9a53-2b1c6f0e4a11 --token "$ADMIN_KEY"

Exit codes: 0 ok, 1 failure (server refused, unreachable, ...), 2 usage error.`,
    );
  registerServe(program);
  registerPublish(program);
  registerTail(program);
  registerEvents(program, (sub) => (active = sub));
  registerTypes(program, (sub) => (active = sub));
  registerExport(program);
  registerKeys(program, (sub) => (active = sub));
  return { program, active: () => active };
}

/** Runs the CLI and returns the exit code; expected failures print one line on stderr. */
export async function run(argv: string[]): Promise<number> {
  const { program, active } = buildProgram();
  try {
    await program.parseAsync(argv);
    return Number(process.exitCode ?? 0);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === "commander.helpDisplayed" || err.code === "commander.version") return 0;
      if (err.code === "commander.help") return 2; // help went to stderr: no command was given
      const path = commandPath(active());
      process.stderr.write(`tidings: ${oneLine(err.message.replace(/^error: /, ""))} (see "${path} --help")\n`);
      return 2;
    }
    const { message, exitCode } = describeError(err, current.server, current.tokenGiven);
    process.stderr.write(`tidings: ${message}\n`);
    if (process.env.TIDINGS_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    return exitCode;
  }
}

function commandPath(c: Command): string {
  const names: string[] = [];
  for (let x: Command | null = c; x; x = x.parent) names.unshift(x.name());
  return names.join(" ");
}

// `tidings … | head` closes stdout early: that is not an error.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
  throw err;
});

const code = await run(process.argv);
process.exit(code);
