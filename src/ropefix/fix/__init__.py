"""The fix engine: libcst rules that find and rewrite device hazards in a transformers tree, formatted as upstream formats them."""
