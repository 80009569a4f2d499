DROP TABLE creative_arms;
