DROP TABLE wechat_identities;
DROP TABLE users;
