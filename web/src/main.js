// The chat page: a conversation with zju-chat-server's /api/chat, streamed.
// The history goes with every question as `messages`; reasoning is shown
// apart from the answer; the answer is Markdown, sanitized (markdown.js).
import { ChatError, listModels, streamChat } from './chat.js';
import { renderMarkdown } from './markdown.js';
import { createThinkSplitter } from './think.js';

const TOKEN_KEY = 'zju-chat.token';
const MODEL_KEY = 'zju-chat.model';

const $ = (id) => document.getElementById(id);
const ui = {
  log: $('log'),
  ask: $('ask'),
  prompt: $('prompt'),
  send: $('send'),
  stop: $('stop'),
  status: $('status'),
  model: $('model'),
  newChat: $('new-chat'),
  tokenForm: $('token-form'),
  token: $('token'),
  tokenWhy: $('token-why'),
  forgetToken: $('forget-token'),
};

/** What went to the server and came back: {role, content} in order. */
let history = [];
let running = null; // the AbortController of the answer being streamed

const storage = {
  get(key) {
    try {
      return localStorage.getItem(key) || '';
    } catch {
      return ''; // storage disabled: the page still works, nothing is kept
    }
  },
  set(key, value) {
    try {
      if (value) localStorage.setItem(key, value);
      else localStorage.removeItem(key);
    } catch {
      // as above
    }
  },
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setStatus(text) {
  ui.status.textContent = text;
}

function askForToken(why) {
  ui.tokenWhy.textContent = why;
  ui.tokenForm.hidden = false;
  ui.token.focus();
}

function showTokenState() {
  ui.forgetToken.hidden = !storage.get(TOKEN_KEY);
}

async function loadModels() {
  try {
    const ids = await listModels(storage.get(TOKEN_KEY));
    const keep = storage.get(MODEL_KEY);
    ui.model.replaceChildren(new Option('server default', ''));
    for (const id of ids) ui.model.add(new Option(id, id));
    if (ids.includes(keep)) ui.model.value = keep;
    document.body.dataset.models = 'loaded';
  } catch (e) {
    if (e instanceof ChatError && e.kind === 'auth') {
      askForToken(storage.get(TOKEN_KEY) ? 'The server refused the saved access token.' : 'This server needs an access token.');
    } else {
      setStatus(`Could not load the model list: ${e.message}`);
    }
    document.body.dataset.models = 'failed';
  }
}

/** Scrolls to the newest text unless the reader scrolled up. */
function follow(wasAtBottom) {
  if (wasAtBottom) ui.log.scrollTop = ui.log.scrollHeight;
}

function atBottom() {
  return ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 40;
}

/** One exchange on screen: the question, then the reasoning and answer as
 * they stream. Rendering is batched to one per frame. */
function addTurn(question) {
  const bottom = atBottom();
  const user = el('section', 'turn user');
  user.append(el('h2', 'who', 'You'), el('p', 'text', question));
  const bot = el('section', 'turn assistant');
  bot.setAttribute('aria-busy', 'true');
  const reasoning = el('details', 'reasoning');
  reasoning.hidden = true;
  reasoning.open = true;
  const summary = el('summary', '', 'Reasoning…');
  const reasoningText = el('div', 'reasoning-text');
  reasoning.append(summary, reasoningText);
  const answerEl = el('div', 'answer markdown');
  const note = el('p', 'note');
  note.hidden = true;
  bot.append(el('h2', 'who', 'Assistant'), reasoning, answerEl, note);
  ui.log.append(user, bot);
  follow(bottom);

  let answer = '';
  let thought = '';
  let frame = 0;
  function render() {
    frame = 0;
    const wasAtBottom = atBottom();
    if (thought) {
      reasoning.hidden = false;
      reasoningText.textContent = thought;
    }
    answerEl.innerHTML = renderMarkdown(answer);
    follow(wasAtBottom);
  }
  function schedule() {
    if (!frame) frame = requestAnimationFrame(render);
  }
  return {
    addReasoning(text) {
      thought += text;
      schedule();
    },
    addAnswer(text) {
      answer += text;
      schedule();
    },
    get answer() {
      return answer;
    },
    finish(kind, text) {
      const wasAtBottom = atBottom();
      if (frame) cancelAnimationFrame(frame);
      render();
      bot.removeAttribute('aria-busy');
      summary.textContent = 'Reasoning';
      if (kind) {
        note.hidden = false;
        note.className = `note ${kind}`;
        note.textContent = text;
        if (kind === 'error') note.setAttribute('role', 'alert');
      }
      bot.dataset.state = kind || 'done';
      follow(wasAtBottom); // the note too
    },
  };
}

function setRunning(controller) {
  running = controller;
  ui.send.hidden = !!controller;
  ui.stop.hidden = !controller;
  ui.prompt.setAttribute('aria-busy', controller ? 'true' : 'false');
}

async function ask(question) {
  const model = ui.model.value || null;
  const request = { messages: history.slice(), user_content: question, model };
  const turn = addTurn(question);
  const controller = new AbortController();
  setRunning(controller);
  setStatus('Answering…');
  // Inline <think> tags in content go to the reasoning block too.
  const split = createThinkSplitter({ onReasoning: turn.addReasoning, onContent: turn.addAnswer });
  try {
    await streamChat(request, {
      token: storage.get(TOKEN_KEY),
      signal: controller.signal,
      onReasoning: turn.addReasoning,
      onContent: (text) => split.push(text),
    });
    split.end();
    turn.finish(null);
    history.push({ role: 'user', content: question }, { role: 'assistant', content: turn.answer });
    setStatus('');
  } catch (e) {
    split.end();
    if (e.name === 'AbortError') {
      turn.finish('stopped', 'Stopped.');
      // What was shown is what the next question builds on.
      history.push({ role: 'user', content: question }, { role: 'assistant', content: turn.answer });
      setStatus('Stopped.');
    } else {
      const text = e instanceof ChatError ? e.message : `Something went wrong: ${e.message}`;
      turn.finish('error', text);
      setStatus(text);
      if (!turn.answer) ui.prompt.value = ui.prompt.value || question; // to retry
      if (e instanceof ChatError && e.kind === 'auth') {
        askForToken(storage.get(TOKEN_KEY) ? 'The server refused the saved access token.' : 'This server needs an access token.');
      }
    }
  } finally {
    setRunning(null);
    if (ui.tokenForm.hidden) ui.prompt.focus();
  }
}

ui.ask.addEventListener('submit', (event) => {
  event.preventDefault();
  const question = ui.prompt.value.trim();
  if (!question || running) return;
  ui.prompt.value = '';
  ask(question);
});

ui.prompt.addEventListener('keydown', (event) => {
  // Enter sends, Shift+Enter is a new line; never while an input method
  // composes (Enter then picks the characters, as in Chinese input).
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
    event.preventDefault();
    ui.ask.requestSubmit();
  } else if (event.key === 'Escape' && running) {
    running.abort();
  }
});

ui.stop.addEventListener('click', () => running?.abort());

ui.newChat.addEventListener('click', () => {
  running?.abort();
  history = [];
  ui.log.replaceChildren();
  setStatus('');
  ui.prompt.focus();
});

ui.model.addEventListener('change', () => storage.set(MODEL_KEY, ui.model.value));

ui.tokenForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const token = ui.token.value.trim();
  if (!token) return;
  storage.set(TOKEN_KEY, token);
  ui.token.value = '';
  ui.tokenForm.hidden = true;
  showTokenState();
  setStatus('');
  loadModels();
  ui.prompt.focus();
});

ui.forgetToken.addEventListener('click', () => {
  storage.set(TOKEN_KEY, '');
  showTokenState();
  loadModels();
});

showTokenState();
loadModels();
ui.prompt.focus();
