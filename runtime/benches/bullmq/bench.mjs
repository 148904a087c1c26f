// BullMQ counterpart of Spool's NATS queue benchmark (runtime/benches/nats.rs), for comparing
// the two on the same machine. It measures, against one Redis server:
//
//   enqueue     enqueue rate from this process: `queue.add` one job per call, awaited one after
//               another (5,000 calls), and `queue.addBulk` with 1,000 jobs per call (100,000
//               jobs); jobs/s for each.
//   throughput  end-to-end no-op throughput: N jobs (default 100,000) enqueued first with
//               `addBulk` (1,000 per call), then W = 1 and W = 2 worker *processes* started
//               (`node bench.mjs worker ...`, forked), each one BullMQ `Worker` with concurrency
//               C (default 100) and the processor `async () => {}`. Timed from spawning the worker
//               process(es) to the last job completed (each worker stamps its last `completed`
//               event; completion is detected by polling `queue.getJobCounts()` every 100 ms).
//               CPU seconds (utime + stime from /proc/<pid>/stat) of the worker processes and of
//               redis-server over the run, also as µs per job. Run twice: with
//               `removeOnComplete: true` (BullMQ's usual fast path: a completed job's hash is
//               deleted) and `removeOnComplete: false` (every completed job is kept, as Spool
//               keeps a record of every succeeded job); `removeOnFail: false` in both.
//   latency     enqueue-to-start latency at 500 jobs/s: one worker process (concurrency 10),
//               warmed up with 20 jobs, then one job added every 2 ms for 10 s (5,000 jobs);
//               latency = the time the processor started (taken in the worker) minus the time
//               just before the `add` call (taken here); p50/p99/max in ms.
//
// Every section uses a fresh queue name (`spool-bench-<section>-<time>-<random>`) and
// obliterates it afterwards. Redis itself is not flushed nor restarted; its persistence
// settings are printed in the header.
//
// Run (needs Node >= 20 and a Redis server; nothing else):
//
//   cd runtime/benches/bullmq && npm ci && node bench.mjs
//
//   node bench.mjs [enqueue|throughput|latency ...] [--jobs N] [--single N]
//                  [--concurrency C] [--workers W] [--remove-on-complete true|false]
//                  [--json] [--redis redis://127.0.0.1:6379]
//
//   sections      any of enqueue, throughput, latency (default: all three)
//   --jobs N      jobs of each throughput run and of the `addBulk` enqueue figure (100000)
//   --single N    one-per-call `add`s of the enqueue figure, and jobs of the latency run
//                 (5000; the latency run paces them at one per 2 ms)
//   --concurrency C   each throughput worker's concurrency (100)
//   --workers W   throughput runs with W worker processes only (default: 1, then 2)
//   --remove-on-complete true|false   throughput runs with this setting only (default: both)
//   --json        also print each throughput figure as one line `RESULT {json}` (for Spool's
//                 side-by-side bench, runtime/benches/versus.rs)
//   --redis URL   the Redis server (redis://[user:password@]host:port[/db]); the CPU figure
//                 for redis-server needs it to run on this machine
//
// Internal: `node bench.mjs worker --queue NAME --concurrency C --redis URL
// --remove-on-complete true|false [--record]` is one worker process, driven over IPC.
//
// Figures go into BENCHMARKS.md next to Spool's.

import { fork, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Queue, Worker } from 'bullmq';

const SELF = fileURLToPath(import.meta.url);
/** Worker concurrency of the throughput runs, unless `--concurrency` says otherwise. */
const CONCURRENCY = 100;
/** Jobs per `addBulk` call. */
const BATCH = 1000;

// ---------------------------------------------------------------------------------------------
// Arguments

function parseArgs(argv) {
  const opts = { sections: [], jobs: 100_000, single: 5_000, redis: 'redis://127.0.0.1:6379' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const count = () => {
      const n = Number(value());
      if (!Number.isInteger(n) || n <= 0) throw new Error(`${a} needs a positive integer`);
      return n;
    };
    switch (a) {
      case '--jobs': opts.jobs = count(); break;
      case '--single': opts.single = count(); break;
      case '--redis': opts.redis = value(); break;
      case '--queue': opts.queue = value(); break;
      case '--concurrency': opts.concurrency = count(); break;
      case '--remove-on-complete': opts.removeOnComplete = value() === 'true'; break;
      case '--record': opts.record = true; break;
      case '--workers': opts.workers = count(); break;
      case '--json': opts.json = true; break;
      case '-h': case '--help':
        console.log(readFileSync(SELF, 'utf8').split('\n').filter((l) => l.startsWith('//'))
          .map((l) => l.slice(3)).join('\n'));
        process.exit(0);
        break;
      default:
        if (a.startsWith('-')) throw new Error(`unknown option ${a}`);
        opts.sections.push(a);
    }
  }
  return opts;
}

/** ioredis options for a redis:// URL (BullMQ needs `maxRetriesPerRequest: null` for workers). */
function connection(url) {
  const u = new URL(url);
  const c = {
    host: u.hostname || '127.0.0.1',
    port: Number(u.port || 6379),
    maxRetriesPerRequest: null,
  };
  if (u.username) c.username = decodeURIComponent(u.username);
  if (u.password) c.password = decodeURIComponent(u.password);
  const db = u.pathname.replace(/^\//, '');
  if (db) c.db = Number(db);
  if (u.protocol === 'rediss:') c.tls = {};
  return c;
}

// ---------------------------------------------------------------------------------------------
// Clocks and CPU

/** Milliseconds since the Unix epoch with sub-millisecond resolution, comparable across
 * processes on this machine (both sides use the same wall clock). */
const epochMs = () => performance.timeOrigin + performance.now();

let clockTicks;
function ticks() {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** CPU seconds (utime + stime) of a process, from /proc/<pid>/stat; NaN if unreadable. */
function procCpu(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).trim().split(/\s+/);
    return (Number(fields[11]) + Number(fields[12])) / ticks();
  } catch {
    return NaN;
  }
}

/** Total and idle (idle + iowait) CPU seconds of the machine, from /proc/stat. */
function machineCpu() {
  try {
    const v = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1)
      .map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    return { total: total / ticks(), idle: (v[3] + v[4]) / ticks() };
  } catch {
    return { total: NaN, idle: NaN };
  }
}

/** `INFO <section>` as an object. */
async function info(client, section) {
  const out = {};
  for (const line of (await client.info(section)).split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

/** Commands processed by the server so far: all (commands that Lua scripts run included) and
 * script calls (EVAL, EVALSHA). Server-wide: whatever else uses this Redis counts too. */
async function commands(client) {
  const stats = await info(client, 'commandstats');
  const calls = (name) => Number(/calls=(\d+)/.exec(stats[`cmdstat_${name}`] ?? '')?.[1] ?? 0);
  return {
    total: Number((await info(client, 'stats')).total_commands_processed),
    scripts: calls('eval') + calls('evalsha') + calls('eval_ro') + calls('evalsha_ro'),
  };
}

/** redis-server's pid: the one it reports, if that process is a redis-server here; else
 * `pgrep -x redis-server` if that finds exactly one; else null (no CPU figure). */
async function redisPid(client) {
  const isRedis = (pid) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, 'utf8').trim().startsWith('redis-server');
    } catch {
      return false;
    }
  };
  const reported = Number((await info(client, 'server')).process_id);
  if (reported && isRedis(reported)) return reported;
  try {
    const pids = execFileSync('pgrep', ['-x', 'redis-server']).toString().trim().split(/\s+/);
    if (pids.length === 1) return Number(pids[0]);
  } catch {
    // no pgrep, or no match
  }
  return null;
}

const secs = (t0) => (performance.now() - t0) / 1000;
const fmt = (x, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');

function percentiles(values) {
  const v = Float64Array.from(values).sort();
  const pct = (p) => v[Math.round((v.length - 1) * p)];
  return { p50: pct(0.5), p99: pct(0.99), max: v[v.length - 1] };
}

// ---------------------------------------------------------------------------------------------
// Queues

function queueName(section) {
  return `spool-bench-${section}-${Date.now()}-${randomBytes(3).toString('hex')}`;
}

/** A fresh queue; `use(queue)` runs, then the queue is obliterated and closed. */
async function withQueue(opts, section, use) {
  const queue = new Queue(queueName(section), { connection: connection(opts.redis) });
  await queue.waitUntilReady();
  try {
    return await use(queue);
  } finally {
    try {
      await queue.obliterate({ force: true });
    } catch (e) {
      console.error(`could not obliterate ${queue.name}: ${e.message}`);
    }
    await queue.close();
  }
}

/** Add `n` no-op jobs with `addBulk`, `BATCH` per call. */
async function fill(queue, n, jobOpts) {
  for (let left = n; left > 0; left -= BATCH) {
    const batch = Math.min(BATCH, left);
    await queue.addBulk(Array.from({ length: batch }, () => ({ name: 'noop', data: {}, opts: jobOpts })));
  }
}

/** Jobs not yet finished (waiting, active, delayed, prioritized, paused, waiting-children). */
function unfinished(counts) {
  return (counts.waiting ?? 0) + (counts.wait ?? 0) + (counts.active ?? 0) + (counts.delayed ?? 0)
    + (counts.prioritized ?? 0) + (counts.paused ?? 0) + (counts['waiting-children'] ?? 0);
}

// ---------------------------------------------------------------------------------------------
// Worker processes (parent side)

/** A forked `node bench.mjs worker ...` process, driven over IPC. */
class WorkerProcess {
  constructor(opts, queue, concurrency, removeOnComplete, record = false) {
    const args = ['worker', '--queue', queue, '--concurrency', String(concurrency),
      '--redis', opts.redis, '--remove-on-complete', String(removeOnComplete)];
    if (record) args.push('--record');
    this.child = fork(SELF, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.exited = null;
    this.waiting = new Map();
    this.child.on('exit', (code, signal) => {
      this.exited = signal ?? code;
      for (const [, { reject }] of this.waiting) reject(new Error(`worker process exited (${this.exited})`));
      this.waiting.clear();
    });
    this.child.on('message', (m) => {
      const w = this.waiting.get(m.type);
      if (w) {
        this.waiting.delete(m.type);
        w.resolve(m);
      }
    });
  }

  get pid() {
    return this.child.pid;
  }

  checkAlive() {
    if (this.exited !== null) throw new Error(`worker process ${this.pid} exited (${this.exited})`);
  }

  /** Send `type` and wait for the reply of the same type. */
  request(type) {
    this.checkAlive();
    return new Promise((resolve, reject) => {
      this.waiting.set(type, { resolve, reject });
      this.child.send({ type });
    });
  }

  /** Wait until its `Worker` is connected. */
  ready() {
    return this.request('ready');
  }

  stats() {
    return this.request('stats');
  }

  /** Close the `Worker` and let the process exit (SIGKILL after 30 s). */
  async stop() {
    if (this.exited !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    try {
      this.child.send({ type: 'stop' });
    } catch {
      // already gone
    }
    const timer = setTimeout(() => {
      console.error(`worker process ${this.pid} did not stop: killing it`);
      this.child.kill('SIGKILL');
    }, 30_000);
    await exited;
    clearTimeout(timer);
  }
}

async function stopAll(procs) {
  await Promise.all(procs.map((p) => p.stop()));
}

// ---------------------------------------------------------------------------------------------
// Worker process (child side)

async function workerMain(opts) {
  const stats = { started: 0, completed: 0, failed: 0, firstStarted: null, lastCompleted: null };
  const records = []; // [job id, processor start (epoch ms), processedOn, timestamp]
  const worker = new Worker(
    opts.queue,
    opts.record
      ? async (job) => {
        const at = epochMs();
        records.push([job.id, at, job.processedOn, job.timestamp]);
        stats.started++;
        stats.firstStarted ??= at;
      }
      : async () => {
        stats.started++;
        stats.firstStarted ??= epochMs();
      },
    {
      connection: connection(opts.redis),
      concurrency: opts.concurrency,
      // The jobs carry the same settings (theirs take precedence); {count: -1} keeps all.
      removeOnComplete: { count: opts.removeOnComplete ? 0 : -1 },
      removeOnFail: { count: -1 },
    },
  );
  // The counting of starts above is the processor's only work beyond `async () => {}`.
  worker.on('completed', () => {
    stats.completed++;
    stats.lastCompleted = epochMs();
  });
  worker.on('failed', () => {
    stats.failed++;
    stats.lastCompleted = epochMs();
  });
  worker.on('error', (e) => console.error(`worker ${process.pid}: ${e.message}`));
  process.on('message', async (m) => {
    switch (m.type) {
      case 'ready':
        await worker.waitUntilReady();
        process.send({ type: 'ready' });
        break;
      case 'stats':
        process.send({ type: 'stats', ...stats, records: opts.record ? records : undefined });
        break;
      case 'stop':
        await worker.close();
        process.disconnect();
        process.exit(0);
        break;
      default:
    }
  });
  process.on('disconnect', () => process.exit(0)); // the parent went away
}

// ---------------------------------------------------------------------------------------------
// Sections

async function enqueueRate(opts) {
  console.log('\n## enqueue rate (queue.add / queue.addBulk from this process)');
  await withQueue(opts, 'enqueue', async (queue) => {
    const n = opts.single;
    const t = performance.now();
    for (let i = 0; i < n; i++) await queue.add('noop', {});
    const s = secs(t);
    console.log(`single (queue.add, awaited one after another): ${n} jobs in ${fmt(s)} s = ${(n / s).toFixed(0)} jobs/s`);
  });
  await withQueue(opts, 'enqueue', async (queue) => {
    const n = opts.jobs;
    const t = performance.now();
    await fill(queue, n, {});
    const s = secs(t);
    console.log(`batched (queue.addBulk, ${BATCH} per call): ${n} jobs in ${fmt(s)} s = ${(n / s).toFixed(0)} jobs/s`);
  });
}

async function throughput(opts, workers, removeOnComplete) {
  const n = opts.jobs;
  await withQueue(opts, 'throughput', async (queue) => {
    const client = await queue.client;
    const rpid = await redisPid(client);
    const memBefore = Number((await info(client, 'memory')).used_memory);
    const t = performance.now();
    await fill(queue, n, { removeOnComplete, removeOnFail: false });
    const filled = secs(t);
    const counts0 = await queue.getJobCounts();
    if (counts0.waiting !== n) throw new Error(`expected ${n} waiting jobs, found ${JSON.stringify(counts0)}`);

    const cmdsBefore = await commands(client);
    const before = { redis: procCpu(rpid), self: procCpu(process.pid), machine: machineCpu() };
    const spawnedAt = epochMs();
    const spawned = performance.now();
    const concurrency = opts.concurrency ?? CONCURRENCY;
    const procs = Array.from({ length: workers },
      () => new WorkerProcess(opts, queue.name, concurrency, removeOnComplete));
    let polled;
    let stats;
    let workerCpu;
    let after;
    try {
      // Until nothing is waiting or active (moving a job wait -> active and active ->
      // completed are each one Lua script, so no job is in between).
      for (;;) {
        if (unfinished(await queue.getJobCounts()) === 0) break;
        procs.forEach((p) => p.checkAlive());
        if (secs(spawned) > 900) throw new Error(`jobs still queued after 900 s`);
        await sleep(100);
      }
      polled = secs(spawned);
      // A worker's `completed` event follows the script's reply: wait until all are counted.
      for (const t0 = performance.now(); ;) {
        stats = await Promise.all(procs.map((p) => p.stats()));
        if (stats.reduce((a, s) => a + s.completed + s.failed, 0) >= n) break;
        if (secs(t0) > 10) throw new Error(`queue empty but workers counted only ${JSON.stringify(stats)}`);
        await sleep(10);
      }
      workerCpu = procs.map((p) => procCpu(p.pid));
      after = { redis: procCpu(rpid), self: procCpu(process.pid), machine: machineCpu() };
    } finally {
      await stopAll(procs);
    }
    const cmdsAfter = await commands(client);
    const memAfter = Number((await info(client, 'memory')).used_memory);
    const counts = await queue.getJobCounts();

    const completed = stats.reduce((a, s) => a + s.completed, 0);
    const failed = stats.reduce((a, s) => a + s.failed, 0);
    const started = stats.reduce((a, s) => a + s.started, 0);
    const lastCompleted = Math.max(...stats.map((s) => s.lastCompleted ?? 0));
    const firstStarted = Math.min(...stats.map((s) => s.firstStarted ?? Infinity));
    const total = (lastCompleted - spawnedAt) / 1000;
    const running = (lastCompleted - firstStarted) / 1000;
    console.log(`${workers} worker process(es): ${n} jobs (enqueued in ${fmt(filled)} s), ${completed} completed, ${failed} failed, ${started} processor calls`);
    console.log(`  spawn -> last completed: ${fmt(total)} s = ${(n / total).toFixed(0)} jobs/s (queue seen empty by the 100 ms poll after ${fmt(polled)} s)`);
    console.log(`  first started -> last completed: ${fmt(running)} s = ${(n / running).toFixed(0)} jobs/s (start-up: first job started ${(firstStarted - spawnedAt).toFixed(0)} ms after spawn)`);
    console.log(`  jobs per worker process: [${stats.map((s) => s.completed).sort((a, b) => b - a).join(', ')}]`);
    const redisCpu = after.redis - before.redis;
    const workersCpu = workerCpu.reduce((a, b) => a + b, 0);
    const benchCpu = after.self - before.self;
    const wall = after.machine.total - before.machine.total;
    const idle = after.machine.idle - before.machine.idle;
    const other = Math.max(0, wall - idle - redisCpu - workersCpu - benchCpu);
    console.log(`  CPU: redis-server ${fmt(redisCpu)} s (${fmt(redisCpu * 1e6 / n, 1)} µs/job), worker process(es) ${fmt(workersCpu)} s [${workerCpu.map((c) => fmt(c)).join(', ')}] (${fmt(workersCpu * 1e6 / n, 1)} µs/job)`);
    console.log(`    over ${fmt(polled)} s wall, ${fmt(wall)} CPU-s available on ${cpus().length} CPUs: this process (polling) ${fmt(benchCpu)} s, other processes ${fmt(other)} s, idle ${fmt(idle)} s${rpid ? '' : ' (redis-server not found on this machine)'}`);
    if (opts.json) {
      console.log(`RESULT ${JSON.stringify({
        section: 'throughput', workers, concurrency, jobs: n, removeOnComplete,
        jobs_per_s: n / total, running_jobs_per_s: n / running,
      })}`);
    }
    console.log(`  redis per job: ${fmt((cmdsAfter.total - cmdsBefore.total) / n, 1)} commands (those run inside Lua scripts included), ${fmt((cmdsAfter.scripts - cmdsBefore.scripts) / n, 2)} script calls (EVAL/EVALSHA); memory held after the run ${fmt((memAfter - memBefore) / n, 0)} bytes/job (completed jobs kept: ${counts.completed})`);
  });
}

async function latency(opts) {
  const n = opts.single;
  const removeOnComplete = false;
  console.log(`\n## enqueue-to-start latency at 500 jobs/s (one worker process, concurrency 10, removeOnComplete: ${removeOnComplete}, removeOnFail: false)`);
  await withQueue(opts, 'latency', async (queue) => {
    const jobOpts = { removeOnComplete, removeOnFail: false };
    const worker = new WorkerProcess(opts, queue.name, 10, removeOnComplete, true);
    try {
      await worker.ready();
      // Warm up: the worker has run a few jobs.
      for (let i = 0; i < 20; i++) {
        await queue.add('noop', {}, jobOpts);
        await sleep(10);
      }
      const waitEmpty = async () => {
        for (const t = performance.now(); unfinished(await queue.getJobCounts()) > 0;) {
          worker.checkAlive();
          if (secs(t) > 60) throw new Error('jobs not run');
          await sleep(50);
        }
      };
      await waitEmpty();
      await sleep(500);

      // id -> [epoch ms just before the add call, the call's duration in ms]
      const sent = new Map();
      const every = 2;
      const start = performance.now();
      for (let i = 0; i < n; i++) {
        const wait = start + every * i - performance.now();
        if (wait > 0) await sleep(wait);
        const at = epochMs();
        const t = performance.now();
        const job = await queue.add('noop', {}, jobOpts);
        sent.set(job.id, [at, performance.now() - t]);
      }
      const paced = secs(start);
      await waitEmpty();
      let stats;
      for (const t0 = performance.now(); ;) {
        stats = await worker.stats();
        if (stats.records.filter(([id]) => sent.has(id)).length >= n) break;
        if (secs(t0) > 10) throw new Error(`worker saw only ${stats.records.length} jobs`);
        await sleep(10);
      }
      const latMs = [];
      const latUs = [];
      for (const [id, at, processedOn, timestamp] of stats.records) {
        const s = sent.get(id);
        if (!s) continue;
        latMs.push(processedOn - timestamp);
        latUs.push(at - s[0]);
      }
      const calls = [...sent.values()].map(([, d]) => d);
      console.log(`${n} jobs enqueued one per call in ${fmt(paced)} s (${(n / paced).toFixed(0)} jobs/s); ${latUs.length} started`);
      let p = percentiles(latMs);
      console.log(`  job.processedOn - job.timestamp (BullMQ's own stamps, 1 ms resolution): p50 ${p.p50} ms, p99 ${p.p99} ms, max ${p.max} ms`);
      p = percentiles(latUs);
      console.log(`  add call begins -> processor starts (µs clocks): p50 ${fmt(p.p50)} ms, p99 ${fmt(p.p99)} ms, max ${fmt(p.max)} ms`);
      p = percentiles(calls);
      console.log(`  the add call itself: p50 ${fmt(p.p50)} ms, p99 ${fmt(p.p99)} ms, max ${fmt(p.max)} ms`);
    } finally {
      await worker.stop();
    }
  });
}

async function header(opts) {
  const version = (pkg) => {
    try {
      return JSON.parse(readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url))).version;
    } catch {
      return '?';
    }
  };
  // ioredis retries a refused connection for ever: give up on the first one after 5 s.
  const queue = new Queue(queueName('probe'), { connection: connection(opts.redis) });
  queue.on('error', () => {});
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`cannot connect to ${opts.redis}`)), 5000);
  });
  try {
    await Promise.race([queue.waitUntilReady(), timeout]);
  } catch (e) {
    queue.disconnect().catch(() => {});
    throw e;
  } finally {
    clearTimeout(timer);
  }
  try {
    const client = await queue.client;
    const server = await info(client, 'server');
    let persistence = '';
    try {
      const save = await client.config('GET', 'save');
      const aof = await client.config('GET', 'appendonly');
      persistence = `, save "${save[1]}", appendonly ${aof[1]}`;
    } catch {
      // CONFIG may be disabled
    }
    const pid = await redisPid(client);
    console.log(`bullmq ${version('bullmq')} (ioredis ${version('ioredis')}), node ${process.version}; redis ${server.redis_version} at ${opts.redis}${persistence}${pid ? `, redis-server pid ${pid}` : ', redis-server not on this machine (no CPU figure)'}; workers: node ${SELF} worker`);
  } finally {
    await queue.obliterate({ force: true }).catch(() => {});
    await queue.close();
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.sections[0] === 'worker') {
    if (!opts.queue || !opts.concurrency) throw new Error('worker needs --queue and --concurrency');
    await workerMain(opts);
    return;
  }
  const all = ['enqueue', 'throughput', 'latency'];
  for (const s of opts.sections) if (!all.includes(s)) throw new Error(`unknown section ${s} (one of ${all.join(', ')})`);
  const run = (s) => opts.sections.length === 0 || opts.sections.includes(s);

  await header(opts);
  if (run('enqueue')) await enqueueRate(opts);
  if (run('throughput')) {
    const removes = opts.removeOnComplete === undefined ? [true, false] : [opts.removeOnComplete];
    for (const removeOnComplete of removes) {
      console.log(`\n## end-to-end no-op throughput (worker processes, concurrency ${opts.concurrency ?? CONCURRENCY}, backlog enqueued first, removeOnComplete: ${removeOnComplete}, removeOnFail: false)`);
      for (const workers of opts.workers ? [opts.workers] : [1, 2]) await throughput(opts, workers, removeOnComplete);
    }
  }
  if (run('latency')) await latency(opts);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
