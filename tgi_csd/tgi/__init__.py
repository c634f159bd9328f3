"""Glue for TGI's shard: the only tgi-csd code that knows TGI's internals (imported only inside TGI)."""
