-- flamingock: author=luis
CREATE TABLE user_log (user_id INTEGER, note TEXT);
CREATE TRIGGER users_ai AFTER INSERT ON users
BEGIN
  INSERT INTO user_log VALUES (new.id, 'created; welcome');
END;
