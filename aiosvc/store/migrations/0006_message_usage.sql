-- An assistant message's token counts as its upstream reported them: JSON
-- {"input_tokens", "output_tokens"}, or NULL when it reported none.

ALTER TABLE messages ADD COLUMN usage TEXT;
