// Model output as HTML: Markdown by marked, then DOMPurify removes anything
// that could run (script, event handlers, javascript: URLs, iframes, forms).
// The page's Content-Security-Policy would block inline script anyway; the
// sanitizer is the first wall, the policy the second.
import DOMPurify from 'dompurify';
import { Marked } from 'marked';

const marked = new Marked({ gfm: true, breaks: false, async: false });

const CONFIG = {
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'iframe'],
  FORBID_ATTR: ['style'],
};
// Links the model writes open in a new tab without handing it this page.
DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer nofollow');
  }
});

/** Sanitized HTML of a Markdown text. */
export function renderMarkdown(text) {
  return DOMPurify.sanitize(marked.parse(text), CONFIG);
}
