/*! moongate.js: browser client for Moongate endpoints. No dependencies.
 *
 *   const mg = new Moongate("/ws/progress/demo");
 *   mg.on("message", (msg) => console.log(msg));
 *   await mg.send({ type: "start", agent: "planner" });   // resolves with the ack
 *
 * Reconnects with exponential backoff and jitter; on session and history endpoints resumes with
 * last_seq and epoch, so no event is lost or repeated; tracks acks by id with timeouts; can send
 * and expect application heartbeats.
 */
(function (root) {
  "use strict";

  const DEFAULTS = {
    reconnect: true,          // reconnect after a drop (not after close() or a 1000 from the server)
    resume: true,             // send last_seq and epoch when reconnecting to a session endpoint
    initialDelay: 250,        // first reconnect delay, ms
    maxDelay: 15000,          // reconnect delay cap, ms
    factor: 2,                // delay growth per failed attempt
    jitter: 0.5,              // up to this fraction of the delay is randomised away
    ackTimeout: 10000,        // ms a send() waits for its ack (across reconnects) before rejecting
    heartbeatInterval: 0,     // ms between {"type":"heartbeat"} sent to the server (0: never)
    heartbeatTimeout: 0,      // ms of silence from the server after which the link is deemed dead (0: off)
    maxQueued: 1000,          // messages held while disconnected
    protocols: undefined,
    WebSocket: undefined,     // a WebSocket implementation, for environments without a global one
  };

  function resolveURL(url) {
    if (/^wss?:\/\//i.test(url)) return url;
    const base = root.location;
    const absolute = new URL(url, base ? base.href : undefined);
    absolute.protocol = absolute.protocol === "https:" ? "wss:" : "ws:";
    return absolute.href;
  }

  class Moongate {
    constructor(url, options) {
      this.url = resolveURL(url);
      this.options = Object.assign({}, DEFAULTS, options || {});
      this.state = "connecting";      // connecting | open | reconnecting | closed
      this.session = null;            // from the ready message, on session endpoints
      this.epoch = null;
      this.lastSeq = null;            // the last event delivered, on session and history endpoints
      this.attempt = 0;
      this._listeners = new Map();
      this._pending = new Map();      // id -> { text, resolve, reject, timer }
      this._queue = [];               // texts waiting for a connection
      this._nextId = 1;
      this._socket = null;
      this._sequenced = false;        // this connection started with ready: messages carry seq
      this._timers = {};
      this._closedByUser = false;
      this._connect();
    }

    // Event emitter: open, ready, reset, message, <type>, heartbeat, reply, error, close, reconnecting.
    on(event, fn) {
      if (!this._listeners.has(event)) this._listeners.set(event, new Set());
      this._listeners.get(event).add(fn);
      return this;
    }

    off(event, fn) {
      const set = this._listeners.get(event);
      if (set) set.delete(fn);
      return this;
    }

    once(event, fn) {
      const wrapper = (...args) => { this.off(event, wrapper); fn.apply(this, args); };
      return this.on(event, wrapper);
    }

    _emit(event, ...args) {
      const set = this._listeners.get(event);
      if (!set) return;
      for (const fn of Array.from(set)) {
        try { fn.apply(this, args); } catch (err) { setTimeout(() => { throw err; }); }
      }
    }

    get connected() { return this.state === "open"; }

    // Sends a message. An object is sent as JSON with an id (its own, or a fresh one) and the
    // promise resolves with the server's reply to it (an ack or the handler's answer) or rejects
    // on an error reply or after ackTimeout. Unanswered messages are sent again after a
    // reconnect. A string is sent as it is; its promise resolves once it is handed to the socket.
    send(message, opts) {
      if (this.state === "closed") return Promise.reject(new Error("moongate: client is closed"));
      if (typeof message === "string") {
        this._transmit(message);
        return Promise.resolve();
      }
      const options = opts || {};
      const body = Object.assign({}, message);
      if (body.id === undefined) body.id = this._nextId++;
      const id = body.id;
      const text = JSON.stringify(body);
      if (options.ack === false) {
        this._transmit(text);
        return Promise.resolve();
      }
      return new Promise((resolve, reject) => {
        const timeout = options.timeout || this.options.ackTimeout;
        const timer = setTimeout(() => {
          this._pending.delete(String(id));
          reject(Object.assign(new Error("moongate: no reply within " + timeout + " ms"), { id: id }));
        }, timeout);
        this._pending.set(String(id), { text: text, resolve: resolve, reject: reject, timer: timer });
        this._transmit(text);
      });
    }

    // Closes for good: no reconnect, pending sends are rejected.
    close(code, reason) {
      this._closedByUser = true;
      this._clearTimers();
      this.state = "closed";
      for (const [, entry] of this._pending) {
        clearTimeout(entry.timer);
        entry.reject(new Error("moongate: client closed"));
      }
      this._pending.clear();
      this._queue = [];
      if (this._socket) {
        try { this._socket.close(code || 1000, reason || ""); } catch (_) { /* already closing */ }
      }
    }

    _transmit(text) {
      if (this._socket && this._socket.readyState === 1) {
        this._socket.send(text);
      } else {
        this._queue.push(text);
        if (this._queue.length > this.options.maxQueued) this._queue.shift();
      }
    }

    _connectURL() {
      if (!this.options.resume || this.epoch === null) return this.url;
      const url = new URL(this.url);
      url.searchParams.set("last_seq", String(this.lastSeq === null ? 0 : this.lastSeq));
      url.searchParams.set("epoch", this.epoch);
      return url.href;
    }

    _connect() {
      const Impl = this.options.WebSocket || root.WebSocket;
      let socket;
      try {
        socket = new Impl(this._connectURL(), this.options.protocols);
      } catch (err) {
        this._emit("error", err);
        this._scheduleReconnect();
        return;
      }
      this._socket = socket;
      this._sequenced = false;
      socket.onopen = () => this._opened(socket);
      socket.onmessage = (event) => this._received(socket, event.data);
      socket.onerror = () => { if (socket === this._socket) this._emit("error", new Error("moongate: socket error")); };
      socket.onclose = (event) => this._dropped(socket, event.code, event.reason, event.wasClean);
    }

    _opened(socket) {
      if (socket !== this._socket) return;
      const reconnected = this.attempt > 0 || this._everOpened === true;
      this._everOpened = true;
      this.state = "open";
      // An attempt counts as a success only if the connection lasts: a server that accepts and
      // drops at once still gets backed off from.
      this._timers.stable = setTimeout(() => { this.attempt = 0; }, 5000);
      this._emit("open", { reconnected: reconnected });
      // Unanswered messages first, in the order they were sent, then what queued meanwhile.
      const resend = Array.from(this._pending.values()).map((entry) => entry.text);
      const queued = this._queue.filter((text) => !resend.includes(text));
      this._queue = [];
      for (const text of resend.concat(queued)) socket.send(text);
      this._armHeartbeat();
      this._armSilence();
    }

    _received(socket, data) {
      if (socket !== this._socket) return;
      this._armSilence();
      if (typeof data !== "string") {
        this._emit("message", data, data);
        return;
      }
      let msg;
      try { msg = JSON.parse(data); } catch (_) { msg = undefined; }
      if (msg === null || typeof msg !== "object" || Array.isArray(msg)) {
        this._emit("message", data, data);
        return;
      }
      const pending = msg.id !== undefined ? this._pending.get(String(msg.id)) : undefined;
      if (pending && (msg.type === "ack" || msg.type === "error" || msg.seq === undefined)) {
        this._pending.delete(String(msg.id));
        clearTimeout(pending.timer);
        if (msg.type === "error") {
          pending.reject(Object.assign(new Error(msg.error || "moongate: error reply"), { reply: msg }));
        } else {
          pending.resolve(msg);
          this._emit("reply", msg);
        }
        return;
      }
      switch (msg.type) {
        case "ack":
          return;  // an ack for a message sent without tracking
        case "heartbeat":
          this._emit("heartbeat", msg);
          return;
        case "error":
          this._emit("error", Object.assign(new Error(msg.error || "moongate: error reply"), { reply: msg }));
          return;
        case "ready":
          this._sequenced = true;
          this.session = msg.session === undefined ? null : msg.session;
          if (this.epoch !== null && msg.epoch !== this.epoch) this.lastSeq = null;
          this.epoch = msg.epoch;
          this._emit("ready", msg);
          return;
        case "reset":
          this.epoch = msg.epoch;
          this.lastSeq = null;
          this._emit("reset", msg);
          return;
      }
      if (this._sequenced && typeof msg.seq === "number") {
        if (this.lastSeq !== null && msg.seq <= this.lastSeq) return;  // already delivered
        this.lastSeq = msg.seq;
      }
      this._emit("message", msg, data);
      if (typeof msg.type === "string") this._emit(msg.type, msg, data);
    }

    _dropped(socket, code, reason, wasClean) {
      if (socket !== this._socket) return;
      this._socket = null;
      this._clearTimers();
      this._emit("close", { code: code, reason: reason, wasClean: wasClean });
      if (this._closedByUser || !this.options.reconnect || code === 1000) {
        this.state = "closed";
        for (const [, entry] of this._pending) {
          clearTimeout(entry.timer);
          entry.reject(new Error("moongate: connection closed (" + code + ")"));
        }
        this._pending.clear();
        return;
      }
      this._scheduleReconnect();
    }

    _scheduleReconnect() {
      this.state = "reconnecting";
      const o = this.options;
      const ceiling = Math.min(o.maxDelay, o.initialDelay * Math.pow(o.factor, this.attempt));
      const delay = Math.round(ceiling * (1 - o.jitter * Math.random()));
      this.attempt += 1;
      this._emit("reconnecting", { attempt: this.attempt, delay: delay });
      this._timers.reconnect = setTimeout(() => this._connect(), delay);
    }

    _armHeartbeat() {
      const every = this.options.heartbeatInterval;
      if (!every) return;
      this._timers.heartbeat = setInterval(() => {
        if (this._socket && this._socket.readyState === 1) this._socket.send('{"type":"heartbeat"}');
      }, every);
    }

    // A link that died without a close (a laptop lid, a dropped NAT entry) delivers nothing; the
    // server's heartbeats stop, and after heartbeatTimeout the client reconnects on its own.
    _armSilence() {
      const timeout = this.options.heartbeatTimeout;
      if (!timeout) return;
      clearTimeout(this._timers.silence);
      this._timers.silence = setTimeout(() => {
        const socket = this._socket;
        if (!socket) return;
        try { socket.close(4000, "heartbeat timeout"); } catch (_) { /* already closing */ }
        this._dropped(socket, 4000, "heartbeat timeout", false);
      }, timeout);
    }

    _clearTimers() {
      clearTimeout(this._timers.stable);
      clearTimeout(this._timers.reconnect);
      clearTimeout(this._timers.silence);
      clearInterval(this._timers.heartbeat);
      this._timers = {};
    }
  }

  Moongate.version = "1";
  root.Moongate = Moongate;
  if (typeof module === "object" && module.exports) module.exports = Moongate;
})(typeof window !== "undefined" ? window : globalThis);
