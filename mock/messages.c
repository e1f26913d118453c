/*
 * The "messages" of a chat request, checked as an OpenAI-compatible API does:
 * each message has a known role and a content that is a string or a non-empty
 * array of parts ({"type":"text","text"} or {"type":"image_url","image_url":
 * {"url"}}, images in user messages of a vision model only); an assistant
 * message that carries tool_calls may have no content. Also the prompt token
 * count, a pure function of the text so tests can predict it.
 */
#include "mock.h"

#include <stdio.h>
#include <string.h>

static int role_known(const char *role)
{
    static const char *const roles[] = {"system", "developer", "user", "assistant",
                                        "tool"};
    for (size_t i = 0; role && i < sizeof(roles) / sizeof(roles[0]); i++)
        if (!strcmp(role, roles[i]))
            return 1;
    return 0;
}

/* Checks part j of message i; NULL or the error code (message in msg). */
static const char *check_part(json_t *part, size_t i, size_t j, const char *role,
                              int vision, char *msg, size_t msglen)
{
    const char *type = json_string_value(json_object_get(part, "type"));
    if (type && !strcmp(type, "text")) {
        if (json_is_string(json_object_get(part, "text")))
            return NULL;
        snprintf(msg, msglen,
                 "messages[%zu].content[%zu]: a text part needs a string 'text'", i, j);
        return "invalid_messages";
    }
    if (type && !strcmp(type, "image_url")) {
        json_t *img = json_object_get(part, "image_url");
        json_t *detail = json_object_get(img, "detail");
        if (!json_is_string(json_object_get(img, "url")) ||
            (detail && !json_is_string(detail))) {
            snprintf(msg, msglen,
                     "messages[%zu].content[%zu]: an image_url part needs "
                     "'image_url': {\"url\": string}",
                     i, j);
            return "invalid_messages";
        }
        if (strcmp(role, "user")) {
            snprintf(msg, msglen,
                     "messages[%zu].content[%zu]: image_url parts are only allowed in "
                     "messages with role 'user'",
                     i, j);
            return "invalid_messages";
        }
        if (!vision) {
            snprintf(msg, msglen,
                     "messages[%zu].content[%zu]: this model does not take images "
                     "(llava-onevision-qwen2-7b-ov does)",
                     i, j);
            return "unsupported_content";
        }
        return NULL;
    }
    snprintf(msg, msglen,
             "messages[%zu].content[%zu]: 'type' must be 'text' or 'image_url'", i, j);
    return "invalid_messages";
}

const char *mock_messages_check(json_t *msgs, int vision, char *msg, size_t msglen)
{
    size_t i, j;
    json_t *m, *part;
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        snprintf(msg, msglen, "'messages' must be a non-empty array");
        return "invalid_messages";
    }
    json_array_foreach(msgs, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content");
        if (!json_is_object(m) || !role_known(role)) {
            snprintf(msg, msglen,
                     "messages[%zu] needs a role (system, developer, user, assistant "
                     "or tool)",
                     i);
            return "invalid_messages";
        }
        if (json_is_string(content))
            continue;
        /* An assistant turn that only calls tools has no content. */
        if ((!content || json_is_null(content)) && !strcmp(role, "assistant") &&
            json_is_array(json_object_get(m, "tool_calls")))
            continue;
        if (!json_is_array(content) || json_array_size(content) == 0) {
            snprintf(msg, msglen,
                     "messages[%zu] needs a string content or a non-empty array of "
                     "content parts",
                     i);
            return "invalid_messages";
        }
        json_array_foreach(content, j, part)
        {
            const char *code = check_part(part, i, j, role, vision, msg, msglen);
            if (code)
                return code;
        }
    }
    return NULL;
}

/* Bytes of a message's text: the content string, or its text parts. */
static size_t text_bytes(json_t *content)
{
    size_t j, n = json_string_length(content);
    json_t *part;
    json_array_foreach(content, j, part)
    {
        n += json_string_length(json_object_get(part, "text"));
    }
    return n;
}

int mock_messages_tokens(json_t *msgs)
{
    size_t i;
    json_t *m;
    int tokens = 0;
    json_array_foreach(msgs, i, m)
    {
        size_t len = text_bytes(json_object_get(m, "content"));
        tokens += 4 + (int)((len + 3) / 4);
    }
    return tokens;
}
