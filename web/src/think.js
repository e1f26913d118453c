// Splits a streamed `content` into reasoning and answer when the model sends
// its reasoning inline as <think>...</think> (as some deployments of
// DeepSeek-R1 and QwQ do) instead of in `reasoning_content`. The tags may be
// cut anywhere across events ("<thi" + "nk>"), so a tail that could still
// become a tag is held back until the next piece decides it.
const OPEN = '<think>';
const CLOSE = '</think>';

/** Length of the longest suffix of text that is a proper prefix of tag. */
function partialTagAt(text, tag) {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n--) {
    if (text.endsWith(tag.slice(0, n))) return n;
  }
  return 0;
}

export function createThinkSplitter({ onReasoning, onContent }) {
  let inside = false;
  let held = '';

  function emit(text) {
    if (!text) return;
    if (inside) onReasoning(text);
    else onContent(text);
  }

  return {
    push(piece) {
      let text = held + piece;
      held = '';
      for (;;) {
        const tag = inside ? CLOSE : OPEN;
        const at = text.indexOf(tag);
        if (at < 0) break;
        emit(text.slice(0, at));
        inside = !inside;
        text = text.slice(at + tag.length);
      }
      const keep = partialTagAt(text, inside ? CLOSE : OPEN);
      emit(text.slice(0, text.length - keep));
      held = text.slice(text.length - keep);
    },
    /** The stream ended: what was held back was text after all. */
    end() {
      emit(held);
      held = '';
    },
  };
}
