// The live feed: one EventSource on /api/events, the charts' history, and the tabs that listen.
// Run in a SharedWorker (feed-worker.js), so every tab of a browser shares one connection: a
// browser opens at most 6 HTTP/1.1 connections to a server, and each EventSource holds one.
"use strict";

const HISTORY_S = 300;

function chartPoint(overview) {
  const byProcessor = {};
  for (const view of overview.processors) {
    if (view.alive) byProcessor[view.processor_id] = { frames_per_s: view.frames_per_s, p95_ms: view.p95_ms };
  }
  return { at: overview.at, frames_per_s: overview.totals.frames_per_s, by_processor: byProcessor };
}

class Feed {
  constructor() {
    this.listeners = new Set();
    this.history = [];
    this.latest = null;
    this.live = false;
    this.source = null;
  }

  // ``send(message)`` gets what happened so far, then every message: {kind: "open" | "error"},
  // {kind: "history", history}, {kind: "overview", overview, point}.
  listen(send) {
    this.listeners.add(send);
    if (!this.source) this.open();
    send({ kind: "history", history: this.history });
    if (this.live) send({ kind: "open" });
    if (this.latest) send({ kind: "overview", overview: this.latest, point: null });
  }

  forget(send) {
    this.listeners.delete(send);
    if (this.listeners.size === 0 && this.source) {
      this.source.close();
      this.source = null;
      this.live = false;
    }
  }

  open() {
    this.source = new EventSource("/api/events");
    this.source.addEventListener("open", () => { this.live = true; this.tell({ kind: "open" }); });
    this.source.addEventListener("error", () => { this.live = false; this.tell({ kind: "error" }); });
    this.source.addEventListener("history", (event) => {
      if (this.history.length === 0) {
        this.history = JSON.parse(event.data);
        this.tell({ kind: "history", history: this.history });
      }
    });
    this.source.addEventListener("overview", (event) => {
      const overview = JSON.parse(event.data);
      this.latest = overview;
      let point = null;
      if (!overview.error) {
        point = chartPoint(overview);
        this.history.push(point);
        while (this.history.length && this.history[0].at < overview.at - HISTORY_S) this.history.shift();
      }
      this.tell({ kind: "overview", overview, point });
    });
  }

  tell(message) {
    for (const send of this.listeners) send(message);
  }
}
