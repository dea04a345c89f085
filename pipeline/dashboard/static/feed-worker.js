// The SharedWorker every tab of the dashboard connects to: one Feed (one EventSource) for all of them.
"use strict";
importScripts("/static/feed.js");

const feed = new Feed();

self.addEventListener("connect", (event) => {
  const port = event.ports[0];
  const send = (message) => port.postMessage(message);
  port.addEventListener("message", (message) => {
    if (message.data === "close") feed.forget(send);
  });
  port.start();
  feed.listen(send);
});
