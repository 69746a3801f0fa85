// pm2 for `scripts/bench daemon` (see bench_daemon.py and bench_daemon_pm2.py).
//
//   node bench_pm2.js daemon HOME [--boot] pm2's God daemon in the foreground (no-daemon mode);
//                                          --boot: it starts the apps of HOME/boot.json at once,
//                                          as the others start their autostart programs at boot
//   node bench_pm2.js driver HOME [--cold] the bench's driver: one JSON request per stdin line,
//                                          one JSON reply per stdout line (the same ops as the
//                                          Python drivers); --cold: launch the daemon itself
//
// HOME is the PM2_HOME of this run; HOME/ecosystem.json lists the apps. The pm2 module comes from
// BENCH_PM2_MODULE (the .bench/pm2 install). The fleet phase loads nothing at boot, so its
// `start all` is `pm2 start ecosystem.json` (it restarts the stopped ones on later rounds).
// `status` is `pm2.list()`: the `getMonitorData` RPC that `pm2 jlist` makes. pm2 7.0.4 never
// launches an app registered with `autostart: false` (God.executeApp re-reads the flag, so
// `pm2 start NAME` leaves it stopped): the flood children are not in boot.json, and the flood
// op starts one with `pm2 start ecosystem.json --only NAME` (registered on the first flood,
// restarted by name on later ones).
"use strict";

const fs = require("fs");
const net = require("net");
const path = require("path");
const readline = require("readline");
const { spawn } = require("child_process");

const [mode, home, ...rest] = process.argv.slice(2);
process.env.PM2_HOME = home;
process.env.PM2_DISCRETE_MODE = "true";
const PM2 = require(process.env.BENCH_PM2_MODULE);
const ECOSYSTEM = path.join(home, "ecosystem.json");
const BOOT = path.join(home, "boot.json");
const RPC = path.join(home, "rpc.sock");

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const call = (fn, ...args) =>
  new Promise((resolve, reject) => fn(...args, (err, out) => (err ? reject(err) : resolve(out))));

if (mode === "daemon") {
  const pm2 = new PM2.custom({ pm2_home: home, daemon_mode: false });
  pm2.connect(true, (err) => {
    if (err) {
      console.error(err);
      process.exit(1);
    }
    if (rest.includes("--boot")) {
      pm2.start(BOOT, (err) => err && console.error("boot: pm2 start boot.json:", err));
    }
  });
} else {
  driver(rest.includes("--cold")).catch((err) => {
    console.log(JSON.stringify({ error: String(err).slice(0, 500) }));
    process.exit(1);
  });
}

// pm2's client pings the daemon first and, when the ping is refused, launches a daemon of its
// own (detached, a second God on the same HOME). The socket file appears at bind, a moment
// before listen: a driver that pinged in between left a stray God behind. So wait until the
// socket accepts, and make a failed ping an error rather than a second daemon.
function accepts() {
  return new Promise((resolve) => {
    const sock = net.createConnection(RPC);
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", () => resolve(false));
  });
}

async function connect(within) {
  const deadline = Date.now() + within * 1000;
  while (!(await accepts())) {
    if (Date.now() > deadline) throw new Error(`${RPC} accepted nothing within ${within}s`);
    await sleep(2);
  }
  const pm2 = new PM2.custom({ pm2_home: home });
  pm2.Client.launchDaemon = (_opts, cb) =>
    (cb || _opts)(new Error("pm2's ping of the daemon failed; no second daemon launched"));
  await call(pm2.connect.bind(pm2));
  return pm2;
}

async function states(pm2) {
  const out = {};
  for (const p of await call(pm2.list.bind(pm2))) out[p.name] = p.pm2_env.status;
  return out;
}

async function until(pm2, done, within, what) {
  const deadline = Date.now() + within * 1000;
  for (;;) {
    const s = await states(pm2);
    if (done(s)) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${within}s waiting for ${what}`);
    await sleep(5);
  }
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code !== "ESRCH";
  }
}

const every = (state, expect) => (s) =>
  Object.keys(s).length === expect && Object.values(s).every((v) => v === state);

async function driver(cold) {
  let pm2 = cold ? null : await connect(30);
  let daemon = null;
  const ops = {
    async cold_start({ argv, cwd, log, expect }) {
      const out = fs.openSync(log, "a");
      const started = process.hrtime.bigint();
      daemon = spawn(argv[0], argv.slice(1), { cwd, stdio: ["ignore", out, out], detached: true });
      pm2 = await connect(120);
      await call(pm2.start.bind(pm2), ECOSYSTEM);
      await until(pm2, every("online", expect), 120, `${expect} apps online`);
      return { secs: Number(process.hrtime.bigint() - started) / 1e9, pid: daemon.pid };
    },
    async cold_stop() {
      const exited = new Promise((r) => daemon.once("exit", r));
      await call(pm2.killDaemon.bind(pm2)).catch(() => {});
      await exited;
      pm2.disconnect();
      return null;
    },
    async wait_running({ names, within }) {
      await until(pm2, (s) => names.every((n) => s[n] === "online"), within, "apps online");
      return 0;
    },
    async start_all({ expect, within }) {
      const started = process.hrtime.bigint();
      await call(pm2.start.bind(pm2), ECOSYSTEM);
      await until(pm2, every("online", expect), within, "every app online");
      return Number(process.hrtime.bigint() - started) / 1e9;
    },
    async stop_all({ expect, within }) {
      const started = process.hrtime.bigint();
      await call(pm2.stop.bind(pm2), "all");
      await until(pm2, every("stopped", expect), within, "every app stopped");
      return Number(process.hrtime.bigint() - started) / 1e9;
    },
    async stop({ name }) {
      // pm2 answers once the app is gone; wait for the stopped state and the pid reaped too,
      // so no later CPU reading of the God daemon takes in a child's times.
      const pid = (await call(pm2.list.bind(pm2))).find((p) => p.name === name)?.pid;
      await call(pm2.stop.bind(pm2), name);
      await until(pm2, (s) => s[name] === "stopped", 60, `${name} stopped`);
      for (const deadline = Date.now() + 60_000; pid && alive(pid); await sleep(5)) {
        if (Date.now() > deadline) throw new Error(`${name} (pid ${pid}) still there after 60s`);
      }
      return null;
    },
    async flood({ name, query_secs, warmup }) {
      // As bench_daemon.op_flood: start `name`, then `status` flat out for query_secs, each
      // call as [monotonic seconds before it, ns]; hrtime is CLOCK_MONOTONIC, the bench's clock.
      const list = pm2.list.bind(pm2);
      for (let i = 0; i < (query_secs ? warmup : 0); i++) await call(list);
      await call(pm2.start.bind(pm2), ECOSYSTEM, { only: name });
      const out = [];
      const end = process.hrtime.bigint() + BigInt(Math.round(query_secs * 1e9));
      for (let now; (now = process.hrtime.bigint()) < end; ) {
        await call(list);
        out.push([Number(now) / 1e9, Number(process.hrtime.bigint() - now)]);
      }
      return out;
    },
    async status_window({ calls, warmup, max_secs }) {
      // As bench_daemon_scale.op_status_window; V8's collector cannot be switched off (its
      // young-generation scavenges are part of decoding each reply, as in any pm2 client).
      const list = pm2.list.bind(pm2);
      for (let i = 0; i < warmup; i++) await call(list);
      const out = [];
      const end = process.hrtime.bigint() + BigInt(Math.round(max_secs * 1e9));
      while (out.length < calls) {
        const t0 = process.hrtime.bigint();
        await call(list);
        const t1 = process.hrtime.bigint();
        out.push(Number(t1 - t0));
        if (t1 > end) break;
      }
      return out;
    },
    async status_latency({ calls, warmup }) {
      const list = pm2.list.bind(pm2);
      for (let i = 0; i < warmup; i++) await call(list);
      const out = [];
      for (let i = 0; i < calls; i++) {
        const t0 = process.hrtime.bigint();
        await call(list);
        out.push(Number(process.hrtime.bigint() - t0));
      }
      return out;
    },
    async shutdown() {
      await call(pm2.killDaemon.bind(pm2)).catch(() => {});
      pm2.disconnect();
      return null;
    },
  };
  console.log(JSON.stringify({ ok: "connected" }));
  for await (const line of readline.createInterface({ input: process.stdin })) {
    const req = JSON.parse(line);
    const op = ops[req.op];
    let reply;
    try {
      if (!op) throw new Error(`${req.op}: not measured for pm2`);
      reply = { ok: await op(req) };
    } catch (err) {
      reply = { error: String(err && err.message ? err.message : err).slice(0, 500) };
    }
    console.log(JSON.stringify(reply));
  }
  if (pm2) pm2.disconnect();
  process.exit(0);
}
