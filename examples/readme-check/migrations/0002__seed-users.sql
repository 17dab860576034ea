INSERT INTO users (email) VALUES ('ana@example.com');
