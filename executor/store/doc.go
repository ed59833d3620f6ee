// Package store is the durable copy of document states (docs/architecture.md):
// PostgreSQL in production, SQLite in local mode, both through gorm and both
// with the same schema and the same upsert SQL.
//
// # Schema
//
//	CREATE TABLE documents (                  -- name set by Options.Table
//	    url_hash         bytea PRIMARY KEY,   -- SHA-256 of url (blob in SQLite)
//	    url              text NOT NULL,       -- COLLATE "C" in PostgreSQL
//	    pub_date         bigint NOT NULL,     -- uint64, mapped (see below)
//	    fetch_time       bigint NOT NULL,     -- uint64, mapped
//	    text             text NOT NULL,       -- COLLATE "C" in PostgreSQL
//	    first_fetch_time bigint NOT NULL      -- uint64, mapped
//	);
//	CREATE TABLE docexec_partitions (         -- one row per (pool, partition)
//	    pool          text NOT NULL,
//	    partition     integer NOT NULL,
//	    synced_offset bigint NOT NULL,        -- input offset the synced states cover
//	    epoch         bigint NOT NULL,        -- uint64 fencing epoch, mapped
//	    updated_at    timestamptz NOT NULL,   -- datetime in SQLite
//	    PRIMARY KEY (pool, partition)
//	);
//
// Rows are keyed by the SHA-256 of the url, not the url: a btree index entry
// holds at most about 2,700 bytes, and urls come up to the size of a Kafka
// message. Migrate moves a table keyed by url (the first layout) to this key.
//
// # Unsigned numbers
//
// The document's times and the fencing epoch are full uint64 values, but
// PostgreSQL's bigint and SQLite's INTEGER are signed 64-bit. numeric(20,0)
// would hold them in PostgreSQL only, and costs space and speed, so every
// uint64 x is stored as the bigint
//
//	s = int64(x XOR 2^63)    i.e.  s = x - 2^63,  x = s + 2^63
//
// The mapping is exact and order-preserving: x < y as unsigned numbers exactly
// when s(x) < s(y) as signed ones, so the database compares the stored values
// as the merge rule compares the real ones (0 is stored as
// -9223372036854775808, 2^63 as 0, 18446744073709551615 as
// 9223372036854775807). Rows read through this package come back as the
// original uint64. For humans and SQL tools, PostgreSQL also has the view
// documents_readable (<table>_readable) and docexec_partitions_readable, which
// show the real values as numeric (s::numeric + 9223372036854775808).
//
// # The merge in SQL
//
// Save writes states with INSERT ... ON CONFLICT (url_hash) DO UPDATE, whose SET
// clause applies the merge rule of document.Merge column by column: text and
// fetch_time come from the newer side (greater fetch_time, ties broken by the
// greater text bytewise), pub_date and first_fetch_time from the older side
// (smaller first_fetch_time, ties broken by the smaller pub_date). The merge is
// a join, so a late, repeated or reordered Save can never move a row
// backwards. Bytewise text comparison is why the text column is COLLATE "C" in
// PostgreSQL (SQLite's default BINARY collation already compares bytes). PostgreSQL's text holds valid UTF-8 without NUL bytes
// only: Save fails (SQLSTATE 22021) on a url or text that is not, so such
// input must be turned away before it gets here. SQLite stores any bytes.
//
// The upsert cannot touch one row twice in a statement, so Save first joins
// the states of a repeated url with document.Merge, then writes them sorted by
// key (a fixed lock order, so concurrent Saves cannot deadlock), at most
// Options.BatchSize rows per INSERT, all in one transaction.
//
// # Watermark and fencing
//
// When Save is given a Watermark, the same transaction upserts the
// partition's row in docexec_partitions, but only if the stored epoch is not
// greater than the Watermark's. Otherwise the transaction is rolled back and
// Save's error wraps fencing.ErrFenced: a newer leader has written since,
// and an ex-leader holding a stale epoch can write neither a watermark nor
// states. The watermark row is written first, so a
// fenced Save fails before it writes any state, and two Saves of one partition
// run one after the other.
package store
