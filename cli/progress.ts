import cliProgress from "cli-progress";

/** A progress bar on stderr, shown only when stderr is a terminal; `log` writes above it. */
export interface Progress {
  update(value: number, payload?: Record<string, unknown>): void;
  setTotal(total: number): void;
  log(line: string): void;
  stop(): void;
}

export function progressBar(format: string, total: number, payload: Record<string, unknown> = {}): Progress {
  if (!process.stderr.isTTY) {
    return { update() {}, setTotal() {}, log: (line) => process.stderr.write(line + "\n"), stop() {} };
  }
  const multi = new cliProgress.MultiBar(
    { stream: process.stderr, format, hideCursor: true, clearOnComplete: true, stopOnComplete: false, etaBuffer: 50, fps: 10 },
    cliProgress.Presets.shades_classic,
  );
  const bar = multi.create(Math.max(total, 1), 0, payload);
  let stopped = false;
  return {
    update: (value, more) => bar.update(value, more),
    setTotal: (t) => bar.setTotal(Math.max(t, 1)),
    log: (line) => (stopped ? process.stderr.write(line + "\n") : multi.log(line + "\n")),
    stop() {
      if (stopped) return;
      stopped = true;
      multi.stop();
    },
  };
}
