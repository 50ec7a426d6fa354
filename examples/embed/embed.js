// The browser side of the chatsdk embed example: get a client token from the backend,
// then stream chat completions straight from the chat server with fetch
// (POST /chat/completions), reading the "data:" chunks of the response body until
// "data: [DONE]". No library, no build step.
//
// Open the page with ?q=... to ask a first question on load.
"use strict";

const MODEL = "inkeep-qa-expert";
// Inkeep gives an answer's sources as calls of these tools (chatsdk.INKEEP_TOOLS).
const TOOLS = [
  {
    type: "function",
    function: {
      name: "provideLinks",
      description: "Provide the links the answer drew on.",
      parameters: {
        type: "object",
        properties: {
          links: {
            type: "array",
            items: {
              type: "object",
              properties: { label: { type: "string" }, url: { type: "string" }, title: { type: "string" } },
              required: ["url"],
            },
          },
        },
        required: ["links"],
      },
    },
  },
];
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
// The conversation so far: the server keeps no history, so every question sends it all.
let history = [];

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
  try {
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
  } finally {
    // Reached when the caller stops early (after [DONE], or on an error): let the
    // connection go instead of leaving the body half read.
    reader.cancel().catch(() => {});
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
    const messages = [...history, { role: "user", content: question }];
    const body = { model: MODEL, messages, stream: true, tools: TOOLS, tool_choice: "auto" };
    const response = await fetch(tok.chat_base_url + "/chat/completions", {
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
    let text = "";
    let done = false;
    const toolCalls = []; // {name, arguments}, by index: arguments arrive in fragments
    for await (const event of serverSentEvents(response.body)) {
      if (event.type !== "message") continue; // a named event: not a chunk
      if (event.data === "[DONE]") {
        done = true;
        break;
      }
      const chunk = JSON.parse(event.data);
      if (chunk.error) throw new Refusal(`The chat server failed: ${chunk.error.message || "error"}`);
      for (const choice of chunk.choices || []) {
        if (choice.index) continue; // only one answer was asked for
        const delta = choice.delta || {};
        if (delta.content) {
          text += delta.content;
          answer.append(delta.content);
        }
        for (const fragment of delta.tool_calls || []) {
          const call = (toolCalls[fragment.index ?? 0] ??= { name: "", arguments: "" });
          if (fragment.function?.name) call.name = fragment.function.name;
          if (fragment.function?.arguments) call.arguments += fragment.function.arguments;
        }
      }
    }
    // Without [DONE] the answer was cut short: never show it as whole.
    if (!done) throw new Refusal("The answer was cut off; please ask again.");
    for (const call of toolCalls) {
      if (call?.name !== "provideLinks") continue;
      for (const source of JSON.parse(call.arguments).links || []) {
        const item = document.createElement("li");
        const link = document.createElement("a");
        link.href = source.url || "#";
        link.textContent = source.title || source.label || source.url || "source";
        item.append(link);
        sources.append(item);
      }
    }
    history = [...messages, { role: "assistant", content: text }];
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
  history = [];
  page.conversation.textContent = "";
  setState("idle");
});

const first = new URLSearchParams(location.search).get("q");
if (first) ask(first);
