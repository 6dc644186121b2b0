"""Browser agents: aiortc media legs kept for the whole shift, bridged to callers without
transcoding, and the desk that rings them."""
