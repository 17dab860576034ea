-- no-transaction
CREATE INDEX users_id ON users (id);
