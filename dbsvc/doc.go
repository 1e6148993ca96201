// Package dbsvc is the database role: it owns the SQLite database and is the
// only code that opens it. Other roles reach it over NATS through Client.
//
// What the role owns:
//
//   - The file DataDir/scalelab.db (DBFile), in WAL mode, with the tables
//     items (SeedItems rows, each with a version that every write raises),
//     sales (Config.SeedRows rows, the big table that the data report
//     aggregates), users (name, bcrypt hash, scopes; see users.go),
//     item_creates (the keys of repeatable creates, CreateKey, each with
//     its body's hash and its item, kept after the item is deleted) and
//     meta (schema version and seed facts). The schema and seed data are created
//     on first start only, in one transaction; later starts keep the data,
//     and migrate a database an older version wrote (store.go, migrations).
//   - The NATS micro service "dbsvc" (wire.DBService), queue group "q", with the
//     endpoints wire.DBData ("db.data"), wire.DBItemGet ("db.items.get"),
//     wire.DBItemCreate ("db.items.create"), wire.DBItemUpdate
//     ("db.items.update", every field), wire.DBItemPatch ("db.items.patch",
//     some fields), wire.DBItemList ("db.items.list", an ItemPage in id
//     order) and wire.DBItemDelete ("db.items.delete", the item and its
//     sales), wire.DBUserPut ("db.users.put") and wire.DBUserGet
//     ("db.users.get"), which carry bcrypt hashes, never passwords. The item
//     writes may be conditional on the item's version (items.go), checked
//     in the write's transaction; a create with a CreateKey happens once
//     per key, its repeats answering the item it made. Errors are micro error replies carrying
//     an apperr code.
//   - The HTTP routes (default address :5002):
//     GET /db (the data Report, the lab's endpoint), GET /items?after_id=&limit=
//     (an ItemPage), GET /items/{id} (one Item), and the ops routes
//     GET /healthz, /readyz (NATS and the database answer) and /metrics.
//   - The metrics scalelab_db_queries_total{query} and
//     scalelab_db_query_seconds{query}, query being data, item_get,
//     item_create, item_update, item_patch, item_list, item_delete,
//     user_put or user_get.
//
// The data report is the expensive query the gateway caches: it reads every
// row of sales (on the order of 100 ms for the default 300,000 rows) and returns
// totals by region and the best-selling items. It is slow because it does
// real work, never because it sleeps.
//
// Layer: roles (docs/ARCHITECTURE.md). It may import internal/ and, in its
// tests, other roles as fixtures; it must not import platform/, cli or
// natsconf, nor another role except a client API allowed in layout_test.go
// (roleClients).
package dbsvc
