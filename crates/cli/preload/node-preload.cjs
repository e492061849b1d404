// mcptap's Node.js preload, loaded with `NODE_OPTIONS=--require <this file>` by `mcptap run`
// and `mcptap env`.
//
// Why it exists: Node's built-in `fetch` (undici) ignores HTTPS_PROXY / HTTP_PROXY unless the
// runtime supports NODE_USE_ENV_PROXY (Node >= 22.21 / 24), so on Node 20 an MCP client using
// plain `fetch` would bypass mcptap. Node 20 does not expose its bundled undici as a module and
// no npm package may be assumed, so this file borrows the `Agent` class from the global
// dispatcher that the bundled undici installs when it loads, and installs a dispatcher whose
// connections go through an HTTP CONNECT tunnel to the proxy named by the environment. It is
// the same undici that `fetch` uses, so there is no version mismatch to worry about.
//
// Cost: reading `Headers` loads the bundled undici at start-up (about 30 ms per Node process
// here) instead of at the first `fetch`; in exchange the dispatcher is in place before any of
// the program's code runs, and a program that installs its own dispatcher still wins.
//
// Rules: honour HTTPS_PROXY / HTTP_PROXY / NO_PROXY (either case) at connection time like curl
// and undici's EnvHttpProxyAgent; do nothing when the runtime already proxies fetch from the
// environment; never write to stdout (it may carry an MCP stdio stream); never throw.
// Set MCPTAP_PRELOAD_DEBUG=1 to get a line on stderr per decision.
'use strict';

(function mcptapPreload() {
  const DEBUG = !!process.env.MCPTAP_PRELOAD_DEBUG;
  const debug = (msg) => {
    if (DEBUG) {
      try {
        process.stderr.write(`mcptap-preload[${process.pid}]: ${msg}\n`);
      } catch (_) {
        // stderr closed: nothing to report to.
      }
    }
  };

  const GLOBAL_DISPATCHER = Symbol.for('undici.globalDispatcher.1');
  const CONNECT_TIMEOUT_MS = 10000;

  function env(name) {
    const v = process.env[name] || process.env[name.toLowerCase()];
    return v && v.trim() ? v.trim() : null;
  }

  function bareHost(hostname) {
    const h = String(hostname || '').toLowerCase();
    return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
  }

  // NO_PROXY entries: `*`, `host`, `.suffix`, `*.suffix`, optionally with `:port`.
  function bypassed(host, port) {
    const list = env('NO_PROXY');
    if (!list) return false;
    for (const raw of list.split(/[\s,]+/)) {
      let entry = raw.trim().toLowerCase();
      if (!entry) continue;
      if (entry === '*') return true;
      let entryPort = null;
      const m = /^(.*):(\d+)$/.exec(entry);
      if (m && !entry.endsWith(']') && (m[1].indexOf(':') === -1 || m[1].startsWith('['))) {
        entry = m[1];
        entryPort = Number(m[2]);
      }
      if (entryPort !== null && entryPort !== port) continue;
      entry = bareHost(entry);
      if (entry.startsWith('*.')) entry = entry.slice(1);
      if (entry.startsWith('.')) {
        if (host.endsWith(entry) || host === entry.slice(1)) return true;
      } else if (host === entry) {
        return true;
      }
    }
    return false;
  }

  function defaultPort(protocol) {
    return protocol === 'https:' ? 443 : 80;
  }

  // The proxy URL to use for a connection to `origin`, or null for a direct one.
  function proxyFor(protocol, host, port) {
    const raw = protocol === 'https:' ? env('HTTPS_PROXY') : env('HTTP_PROXY');
    if (!raw || bypassed(host, port)) return null;
    try {
      const url = new URL(raw.includes('://') ? raw : `http://${raw}`);
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        debug(`unsupported proxy scheme in ${url.protocol}//${url.host}; connecting directly`);
        return null;
      }
      return url;
    } catch (e) {
      debug(`unparsable proxy URL; connecting directly (${e.message})`);
      return null;
    }
  }

  function install() {
    // Reading a lazy web global loads Node's bundled undici, which installs its default
    // global dispatcher (an undici `Agent`) under GLOBAL_DISPATCHER.
    void globalThis.Headers;
    const current = globalThis[GLOBAL_DISPATCHER];
    if (!current || typeof current.dispatch !== 'function') {
      debug('no undici global dispatcher in this runtime; nothing to do');
      return;
    }
    const Agent = current.constructor;
    if (typeof Agent !== 'function' || Agent.name !== 'Agent') {
      // Node >= 22.21 / 24 with NODE_USE_ENV_PROXY=1 installs an EnvHttpProxyAgent itself,
      // and a program may have installed its own dispatcher: leave both alone.
      debug(`global dispatcher is ${Agent && Agent.name}; leaving it alone`);
      return;
    }

    const http = require('node:http');
    const https = require('node:https');
    const net = require('node:net');
    const tls = require('node:tls');

    // undici's connector contract: connect({hostname, protocol, port, servername, ...}, cb),
    // cb(err) or cb(null, socket) once the socket is ready for HTTP (TLS included).
    function tunnelConnect(opts, cb) {
      let done = false;
      const finish = (err, socket) => {
        if (done) return;
        done = true;
        cb(err, socket);
      };
      const host = bareHost(opts.hostname);
      const port = Number(opts.port) || defaultPort(opts.protocol);
      const proxy = proxyFor(opts.protocol, host, port);
      const authority = net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
      const headers = { host: authority };
      if (proxy.username || proxy.password) {
        const cred = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
        headers['proxy-authorization'] = `Basic ${Buffer.from(cred).toString('base64')}`;
      }
      const req = (proxy.protocol === 'https:' ? https : http).request({
        host: bareHost(proxy.hostname),
        port: Number(proxy.port) || defaultPort(proxy.protocol),
        method: 'CONNECT',
        path: authority,
        headers,
        agent: false,
        timeout: CONNECT_TIMEOUT_MS,
      });
      req.once('timeout', () => {
        req.destroy(new Error(`mcptap preload: CONNECT ${authority} via ${proxy.host} timed out`));
      });
      req.once('error', (e) => finish(e));
      req.once('connect', (res, socket, head) => {
        req.setTimeout(0);
        if (res.statusCode !== 200) {
          socket.destroy();
          finish(
            new Error(
              `mcptap preload: proxy ${proxy.host} answered ${res.statusCode} to CONNECT ${authority}`,
            ),
          );
          return;
        }
        if (head && head.length) socket.unshift(head);
        debug(`${opts.protocol}//${authority} via ${proxy.host}`);
        if (opts.protocol !== 'https:') {
          finish(null, socket);
          return;
        }
        // `host` is what the certificate is checked against; SNI carries names only.
        const servername = net.isIP(host) ? undefined : opts.servername || host;
        const secure = tls.connect({ socket, host, servername, ALPNProtocols: ['http/1.1'] });
        secure.once('secureConnect', () => finish(null, secure));
        secure.once('error', (e) => {
          socket.destroy();
          finish(e);
        });
      });
      req.end();
    }

    const tunnelled = new Agent({ connect: tunnelConnect });

    // Routes each request: through the tunnelling agent when the environment names a proxy for
    // its origin, else through the original dispatcher, untouched.
    class McptapDispatcher extends Agent {
      dispatch(dispatchOpts, handler) {
        let useProxy = false;
        try {
          const origin = new URL(String(dispatchOpts.origin));
          const host = bareHost(origin.hostname);
          const port = Number(origin.port) || defaultPort(origin.protocol);
          useProxy = proxyFor(origin.protocol, host, port) !== null;
        } catch (_) {
          useProxy = false;
        }
        return (useProxy ? tunnelled : current).dispatch(dispatchOpts, handler);
      }

      close(...args) {
        return Promise.all([tunnelled.close(), current.close()]).then(() => super.close(...args));
      }

      destroy(...args) {
        return Promise.all([tunnelled.destroy(), current.destroy()]).then(() =>
          super.destroy(...args),
        );
      }
    }

    globalThis[GLOBAL_DISPATCHER] = new McptapDispatcher();
    debug(`fetch goes through HTTPS_PROXY/HTTP_PROXY (undici ${process.versions.undici || '?'})`);
  }

  try {
    install();
  } catch (e) {
    debug(`not installed: ${(e && e.stack) || e}`);
  }
})();
