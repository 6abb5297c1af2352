import { readdirSync, readFileSync } from "node:fs";

/** CPU time so far (user + system, all threads), in seconds: of every process, and of all postgres processes together. */
export interface CpuSnapshot {
  byPid: Map<number, number>;
  postgres: number;
}

/** USER_HZ: the unit of /proc/<pid>/stat's times on Linux. */
const ticksPerSecond = 100;

/** Reads /proc once. PostgreSQL's share sums its backends and its writers (the processes named postgres). */
export function cpuSnapshot(): CpuSnapshot {
  const byPid = new Map<number, number>();
  let postgres = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // exited meanwhile
    }
    // The name is in parentheses and may hold spaces; the fields after it are space-separated.
    const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const seconds = (Number(fields[11]) + Number(fields[12])) / ticksPerSecond; // utime + stime
    byPid.set(Number(entry), seconds);
    if (name.startsWith("postgres")) postgres += seconds;
  }
  return { byPid, postgres };
}

/** CPU seconds a process spent between two snapshots (NaN if it is missing from either). */
export function cpuSpent(before: CpuSnapshot, after: CpuSnapshot, pid: number): number {
  return (after.byPid.get(pid) ?? Number.NaN) - (before.byPid.get(pid) ?? Number.NaN);
}
