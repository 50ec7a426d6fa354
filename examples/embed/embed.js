// The browser side of the chatsdk embed example: get a client token from the backend,
// then stream answers straight from the chat server with fetch, reading its server-sent
// events from the response body. No library, no build step.
//
// Open the page with ?q=... to ask a first question on load.
"use strict";

const INTEGRATION_ID = "docs";
// Mint a new token this long before the old one expires (the public widget does the same).
const REFRESH_MARGIN_MS = 30_000;

const page = {
  form: document.getElementById("ask"),
  question: document.getElementById("question"),
  logout: document.getElementById("logout"),
  error: document.getElementById("error"),
  conversation: document.getElementById("conversation"),
};

let token = null; // {client_token, expires_after, project, chat_base_url, expiresAt}
let chatSessionId = null; // set by the first answer; follow-ups continue that session

function setState(state) {
  document.body.dataset.state = state;
}

function showError(message) {
  page.error.textContent = message;
  setState("error");
}

async function clientToken() {
  if (token && Date.now() < token.expiresAt - REFRESH_MARGIN_MS) return token;
  const response = await fetch("/token", { method: "POST" });
  if (!response.ok) {
    throw new Refusal(`The backend gave no token (${response.status}): ${await reason(response)}`);
  }
  const minted = await response.json();
  token = { ...minted, expiresAt: Date.now() + minted.expires_after * 1000 };
  return token;
}

class Refusal extends Error {}

// The server's own words: a JSON "detail"/"message"/"error" field, or the plain text.
async function reason(response) {
  const text = (await response.text()).trim();
  try {
    const body = JSON.parse(text);
    for (const key of ["detail", "message", "error"]) {
      if (typeof body[key] === "string") return body[key];
    }
  } catch {
    // not JSON: the text itself (e.g. "Origin X does not match audience claim: Y")
  }
  return text || response.statusText;
}

// Server-sent events from a fetch body, parsed as the HTML standard says: lines end at
// CRLF, LF or CR; "field: value"; a blank line dispatches; ":" starts a comment.
async function* serverSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let type = "";
  let data = [];
  const lineEnd = /\r\n|\r|\n/;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return; // an event not ended by a blank line is never dispatched
    buffer += value;
    for (;;) {
      const match = lineEnd.exec(buffer);
      // A CR at the very end may be the first half of a CRLF: wait for more.
      if (!match || (match[0] === "\r" && match.index === buffer.length - 1)) break;
      const line = buffer.slice(0, match.index);
      buffer = buffer.slice(match.index + match[0].length);
      if (line === "") {
        if (data.length) yield { type: type || "message", data: data.join("\n") };
        type = "";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let fieldValue = colon < 0 ? "" : line.slice(colon + 1);
      if (fieldValue.startsWith(" ")) fieldValue = fieldValue.slice(1);
      if (field === "event") type = fieldValue;
      else if (field === "data") data.push(fieldValue);
    }
  }
}

function newTurn(question) {
  const turn = document.createElement("div");
  turn.className = "turn";
  const asked = document.createElement("p");
  asked.className = "question";
  asked.textContent = question;
  const answer = document.createElement("p");
  answer.className = "answer";
  const sources = document.createElement("ol");
  sources.className = "sources";
  turn.append(asked, answer, sources);
  page.conversation.append(turn);
  return { answer, sources };
}

async function ask(question) {
  page.error.textContent = "";
  setState("asking");
  const { answer, sources } = newTurn(question);
  try {
    const tok = await clientToken();
    const path = chatSessionId
      ? `/chat_sessions/${encodeURIComponent(chatSessionId)}/chat_results`
      : "/chat_sessions/chat_results";
    const message = { role: "user", content: question };
    const body = chatSessionId
      ? { integration_id: INTEGRATION_ID, message, stream: true }
      : { integration_id: INTEGRATION_ID, chat_session: { messages: [message] }, stream: true };
    const response = await fetch(tok.chat_base_url + path, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "text/event-stream",
        "Gram-Chat-Session": tok.client_token,
        "Gram-Project": tok.project,
      },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      if (response.status === 401) token = null; // expired or revoked: mint anew next time
      throw new Refusal(`The chat server refused (${response.status}): ${await reason(response)}`);
    }
    setState("streaming");
    for await (const event of serverSentEvents(response.body)) {
      if (event.type === "message_chunk") {
        const chunk = JSON.parse(event.data);
        if (chunk.chat_session_id) chatSessionId = chunk.chat_session_id;
        answer.append(chunk.content_chunk);
      } else if (event.type === "records_cited") {
        for (const citation of JSON.parse(event.data).citations) {
          const item = document.createElement("li");
          const link = document.createElement("a");
          link.href = citation.record.url || "#";
          link.textContent = citation.record.title || citation.record.url || "source";
          item.append(link);
          sources.append(item);
        }
      } // any other event: a newer server's, never fatal
    }
    setState("done");
  } catch (error) {
    if (error instanceof Refusal) showError(error.message);
    else showError(`Could not reach the chat server: ${error.message}`);
  }
}

page.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const question = page.question.value.trim();
  if (question) {
    page.question.value = "";
    ask(question);
  }
});

page.logout.addEventListener("click", async () => {
  if (token) {
    await fetch("/logout", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ client_token: token.client_token }),
    });
  }
  token = null;
  chatSessionId = null;
  page.conversation.textContent = "";
  setState("idle");
});

const first = new URLSearchParams(location.search).get("q");
if (first) ask(first);
