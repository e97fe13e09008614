-- dbspica schema for MySQL/MariaDB, generated from spica_core/db/models.py.
-- Do not edit: regenerate with `spica db ddl > sql/dbspica.mysql.sql`.
-- Schema revision 0008 (Alembic); `spica db init` also stamps it.

SET NAMES utf8mb4;

CREATE TABLE application (
	id INTEGER NOT NULL AUTO_INCREMENT,
	name VARCHAR(64) NOT NULL,
	`binary` VARCHAR(1024) NOT NULL,
	version VARCHAR(64) NOT NULL,
	checksum VARCHAR(64),
	config_files JSON NOT NULL,
	installed_at DATETIME(6) NOT NULL,
	`release` VARCHAR(32),
	registered_by VARCHAR(64),
	CONSTRAINT pk_application PRIMARY KEY (id),
	CONSTRAINT uq_application_name_version UNIQUE (name, version)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE daemon_journal (
	id INTEGER NOT NULL AUTO_INCREMENT,
	journal_id VARCHAR(32) NOT NULL,
	node VARCHAR(128) NOT NULL,
	applied_seq BIGINT NOT NULL,
	updated_at DATETIME(6) NOT NULL,
	CONSTRAINT pk_daemon_journal PRIMARY KEY (id),
	CONSTRAINT uq_daemon_journal_journal_id UNIQUE (journal_id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE INDEX ix_daemon_journal_node ON daemon_journal (node);

CREATE TABLE monitor (
	id INTEGER NOT NULL AUTO_INCREMENT,
	host VARCHAR(255) NOT NULL,
	pid INTEGER NOT NULL,
	`interval` FLOAT NOT NULL,
	started_at DATETIME(6) NOT NULL,
	heartbeat_at DATETIME(6) NOT NULL,
	polls BIGINT NOT NULL,
	stopped_at DATETIME(6),
	CONSTRAINT pk_monitor PRIMARY KEY (id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE INDEX ix_monitor_heartbeat_at ON monitor (heartbeat_at);

CREATE TABLE monitor_lease (
	id INTEGER NOT NULL AUTO_INCREMENT,
	monitor_id INTEGER NOT NULL,
	expires_at DATETIME(6) NOT NULL,
	CONSTRAINT pk_monitor_lease PRIMARY KEY (id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE node (
	id INTEGER NOT NULL AUTO_INCREMENT,
	name VARCHAR(128) NOT NULL,
	host VARCHAR(255) NOT NULL,
	port INTEGER NOT NULL,
	user VARCHAR(64),
	root VARCHAR(1024) NOT NULL,
	cpus INTEGER,
	ram_gb FLOAT,
	status VARCHAR(32) NOT NULL,
	last_seen DATETIME(6),
	last_error TEXT,
	created_at DATETIME(6) NOT NULL,
	CONSTRAINT pk_node PRIMARY KEY (id),
	CONSTRAINT uq_node_name UNIQUE (name)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE INDEX ix_node_status ON node (status);

CREATE TABLE node_figures (
	id INTEGER NOT NULL AUTO_INCREMENT,
	node VARCHAR(128) NOT NULL,
	liveness VARCHAR(32) NOT NULL,
	polled_at DATETIME(6) NOT NULL,
	last_seen DATETIME(6),
	last_error TEXT,
	`load` JSON,
	heartbeat_age FLOAT,
	heartbeat_pid INTEGER,
	agent_version VARCHAR(64),
	counts JSON,
	partitions JSON NOT NULL,
	running JSON NOT NULL,
	monitor_host VARCHAR(255) NOT NULL,
	monitor_pid INTEGER NOT NULL,
	CONSTRAINT pk_node_figures PRIMARY KEY (id),
	CONSTRAINT uq_node_figures_node UNIQUE (node)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE operator_action (
	id INTEGER NOT NULL AUTO_INCREMENT,
	created_at DATETIME(6) NOT NULL,
	user VARCHAR(64) NOT NULL,
	action VARCHAR(32) NOT NULL,
	targets JSON NOT NULL,
	dry_run BOOL NOT NULL,
	plan TEXT,
	result VARCHAR(32) NOT NULL,
	detail JSON NOT NULL,
	CONSTRAINT pk_operator_action PRIMARY KEY (id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE INDEX ix_operator_action_created_at ON operator_action (created_at);

CREATE TABLE problem (
	id INTEGER NOT NULL AUTO_INCREMENT,
	created_at DATETIME(6) NOT NULL,
	kind VARCHAR(32) NOT NULL,
	node VARCHAR(128),
	stack VARCHAR(128),
	runid VARCHAR(32),
	filter VARCHAR(32),
	`release` VARCHAR(32),
	message TEXT NOT NULL,
	resolved BOOL NOT NULL,
	resolved_at DATETIME(6),
	CONSTRAINT pk_problem PRIMARY KEY (id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE INDEX ix_problem_created_at ON problem (created_at);
CREATE INDEX ix_problem_node ON problem (node);
CREATE INDEX ix_problem_resolved_kind ON problem (resolved, kind);
CREATE INDEX ix_problem_stack ON problem (stack);

CREATE TABLE runid (
	id INTEGER NOT NULL AUTO_INCREMENT,
	name VARCHAR(32) NOT NULL,
	images INTEGER NOT NULL,
	bytes BIGINT NOT NULL,
	transfer_mode VARCHAR(32) NOT NULL,
	transfer_status VARCHAR(32) NOT NULL,
	updated_at DATETIME(6) NOT NULL,
	CONSTRAINT pk_runid PRIMARY KEY (id),
	CONSTRAINT uq_runid_name UNIQUE (name)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE stack_release (
	id INTEGER NOT NULL AUTO_INCREMENT,
	name VARCHAR(32) NOT NULL,
	digest VARCHAR(64) NOT NULL,
	settings JSON NOT NULL,
	frozen_at DATETIME(6) NOT NULL,
	frozen_by VARCHAR(64),
	CONSTRAINT pk_stack_release PRIMARY KEY (id),
	CONSTRAINT uq_stack_release_name UNIQUE (name)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE viewer (
	id INTEGER NOT NULL AUTO_INCREMENT,
	login VARCHAR(64) NOT NULL,
	password_hash VARCHAR(255) NOT NULL,
	runids JSON NOT NULL,
	email VARCHAR(255),
	CONSTRAINT pk_viewer PRIMARY KEY (id),
	CONSTRAINT uq_viewer_login UNIQUE (login)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE image (
	id INTEGER NOT NULL AUTO_INCREMENT,
	filename VARCHAR(128) NOT NULL,
	runid_id INTEGER,
	filter VARCHAR(32),
	object VARCHAR(128),
	ra DOUBLE,
	`dec` DOUBLE,
	exptime DOUBLE,
	date_obs DATETIME(6),
	airmass DOUBLE,
	seeing DOUBLE,
	skyprobe DOUBLE,
	grade VARCHAR(8),
	node_id INTEGER,
	path VARCHAR(1024),
	qf_status VARCHAR(32) NOT NULL,
	raw BOOL NOT NULL,
	instrument VARCHAR(32),
	qrunid VARCHAR(32),
	mjd_obs DOUBLE,
	gain DOUBLE,
	saturate DOUBLE,
	phot_c DOUBLE,
	phot_k DOUBLE,
	extensions INTEGER,
	bytes BIGINT NOT NULL,
	checksum VARCHAR(80),
	`partition` VARCHAR(128),
	repository VARCHAR(128),
	ingested_at DATETIME(6),
	qf_release VARCHAR(32),
	qf_at DATETIME(6),
	background DOUBLE,
	background_rms DOUBLE,
	elongation DOUBLE,
	sources INTEGER,
	psf_stars INTEGER,
	ccds_measured INTEGER,
	report_path VARCHAR(1024),
	weight_path VARCHAR(1024),
	flag_path VARCHAR(1024),
	qf_error TEXT,
	grade_proposal VARCHAR(8),
	grade_reasons JSON,
	grade_comment TEXT,
	graded_by VARCHAR(64),
	graded_at DATETIME(6),
	CONSTRAINT pk_image PRIMARY KEY (id),
	CONSTRAINT uq_image_filename UNIQUE (filename),
	CONSTRAINT fk_image_runid_id_runid FOREIGN KEY(runid_id) REFERENCES runid (id) ON DELETE SET NULL,
	CONSTRAINT fk_image_node_id_node FOREIGN KEY(node_id) REFERENCES node (id) ON DELETE SET NULL
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE INDEX ix_image_node_id ON image (node_id);
CREATE INDEX ix_image_repository ON image (repository);
CREATE INDEX ix_image_runid_id_filter ON image (runid_id, filter);

CREATE TABLE node_application (
	id INTEGER NOT NULL AUTO_INCREMENT,
	node_id INTEGER NOT NULL,
	application_id INTEGER NOT NULL,
	path VARCHAR(1024) NOT NULL,
	checksum VARCHAR(64),
	checked_at DATETIME(6) NOT NULL,
	CONSTRAINT pk_node_application PRIMARY KEY (id),
	CONSTRAINT uq_node_application_node_id_application_id UNIQUE (node_id, application_id),
	CONSTRAINT fk_node_application_node_id_node FOREIGN KEY(node_id) REFERENCES node (id) ON DELETE CASCADE,
	CONSTRAINT fk_node_application_application_id_application FOREIGN KEY(application_id) REFERENCES application (id) ON DELETE CASCADE
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE node_disk (
	id INTEGER NOT NULL AUTO_INCREMENT,
	node_id INTEGER NOT NULL,
	`partition` VARCHAR(128) NOT NULL,
	total_bytes BIGINT NOT NULL,
	free_bytes BIGINT NOT NULL,
	reserved_bytes BIGINT NOT NULL,
	updated_at DATETIME(6) NOT NULL,
	CONSTRAINT pk_node_disk PRIMARY KEY (id),
	CONSTRAINT uq_node_disk_node_id_partition UNIQUE (node_id, `partition`),
	CONSTRAINT fk_node_disk_node_id_node FOREIGN KEY(node_id) REFERENCES node (id) ON DELETE CASCADE
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE stack (
	id INTEGER NOT NULL AUTO_INCREMENT,
	name VARCHAR(128) NOT NULL,
	step VARCHAR(32) NOT NULL,
	survey VARCHAR(32),
	filter VARCHAR(32),
	`release` VARCHAR(32),
	runid VARCHAR(32),
	node_id INTEGER,
	state VARCHAR(32) NOT NULL,
	priority INTEGER NOT NULL,
	ranking VARCHAR(8),
	`lines` INTEGER NOT NULL,
	progress INTEGER NOT NULL,
	created_at DATETIME(6) NOT NULL,
	launched_at DATETIME(6),
	started_at DATETIME(6),
	finished_at DATETIME(6),
	updated_at DATETIME(6) NOT NULL,
	failed_line INTEGER,
	exit_code INTEGER,
	error TEXT,
	tile VARCHAR(128),
	inputs_digest VARCHAR(64),
	CONSTRAINT pk_stack PRIMARY KEY (id),
	CONSTRAINT uq_stack_name UNIQUE (name),
	CONSTRAINT fk_stack_node_id_node FOREIGN KEY(node_id) REFERENCES node (id) ON DELETE SET NULL
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE INDEX ix_stack_node_id_state ON stack (node_id, state);
CREATE INDEX ix_stack_runid ON stack (runid);
CREATE INDEX ix_stack_state_priority ON stack (state, priority);
CREATE INDEX ix_stack_tile ON stack (tile);
CREATE INDEX ix_stack_updated_at ON stack (updated_at);

CREATE TABLE image_ccd (
	id INTEGER NOT NULL AUTO_INCREMENT,
	image_id INTEGER NOT NULL,
	ccd INTEGER NOT NULL,
	extname VARCHAR(32),
	seeing DOUBLE,
	elongation DOUBLE,
	sources INTEGER,
	psf_stars INTEGER,
	background DOUBLE,
	background_rms DOUBLE,
	saturation DOUBLE,
	CONSTRAINT pk_image_ccd PRIMARY KEY (id),
	CONSTRAINT uq_image_ccd_image_id_ccd UNIQUE (image_id, ccd),
	CONSTRAINT fk_image_ccd_image_id_image FOREIGN KEY(image_id) REFERENCES image (id) ON DELETE CASCADE
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE stack_app (
	id INTEGER NOT NULL AUTO_INCREMENT,
	stack_id INTEGER NOT NULL,
	application_id INTEGER NOT NULL,
	version VARCHAR(64) NOT NULL,
	CONSTRAINT pk_stack_app PRIMARY KEY (id),
	CONSTRAINT uq_stack_app_stack_id_application_id UNIQUE (stack_id, application_id),
	CONSTRAINT fk_stack_app_stack_id_stack FOREIGN KEY(stack_id) REFERENCES stack (id) ON DELETE CASCADE,
	CONSTRAINT fk_stack_app_application_id_application FOREIGN KEY(application_id) REFERENCES application (id) ON DELETE CASCADE
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE INDEX ix_stack_app_application_id ON stack_app (application_id);

CREATE TABLE stack_file (
	id INTEGER NOT NULL AUTO_INCREMENT,
	stack_id INTEGER NOT NULL,
	image_id INTEGER NOT NULL,
	`role` VARCHAR(32) NOT NULL,
	CONSTRAINT pk_stack_file PRIMARY KEY (id),
	CONSTRAINT uq_stack_file_stack_id_image_id_role UNIQUE (stack_id, image_id, `role`),
	CONSTRAINT fk_stack_file_stack_id_stack FOREIGN KEY(stack_id) REFERENCES stack (id) ON DELETE CASCADE,
	CONSTRAINT fk_stack_file_image_id_image FOREIGN KEY(image_id) REFERENCES image (id) ON DELETE CASCADE
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE INDEX ix_stack_file_image_id ON stack_file (image_id);

CREATE TABLE stack_result (
	id INTEGER NOT NULL AUTO_INCREMENT,
	stack_id INTEGER NOT NULL,
	coadd_path VARCHAR(1024),
	weight_path VARCHAR(1024),
	catalog_path VARCHAR(1024),
	thumbnail_path VARCHAR(1024),
	scamp_inputs INTEGER,
	swarp_inputs INTEGER,
	exptime DOUBLE,
	seeing DOUBLE,
	scamp_internal_rms DOUBLE,
	scamp_external_rms DOUBLE,
	background DOUBLE,
	background_rms DOUBLE,
	completeness DOUBLE,
	sources INTEGER,
	zero_point DOUBLE,
	step_seconds JSON NOT NULL,
	recorded_at DATETIME(6) NOT NULL,
	CONSTRAINT pk_stack_result PRIMARY KEY (id),
	CONSTRAINT uq_stack_result_stack_id UNIQUE (stack_id),
	CONSTRAINT fk_stack_result_stack_id_stack FOREIGN KEY(stack_id) REFERENCES stack (id) ON DELETE CASCADE
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE stack_run (
	id INTEGER NOT NULL AUTO_INCREMENT,
	stack_id INTEGER NOT NULL,
	line INTEGER NOT NULL,
	attempt INTEGER NOT NULL,
	command TEXT NOT NULL,
	node VARCHAR(128),
	started_at DATETIME(6) NOT NULL,
	ended_at DATETIME(6),
	exit_code INTEGER,
	CONSTRAINT pk_stack_run PRIMARY KEY (id),
	CONSTRAINT uq_stack_run_stack_id_line_attempt UNIQUE (stack_id, line, attempt),
	CONSTRAINT fk_stack_run_stack_id_stack FOREIGN KEY(stack_id) REFERENCES stack (id) ON DELETE CASCADE
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE transfer (
	id INTEGER NOT NULL AUTO_INCREMENT,
	filename VARCHAR(128) NOT NULL,
	runid VARCHAR(32),
	source VARCHAR(1024) NOT NULL,
	destination_node VARCHAR(128) NOT NULL,
	bytes BIGINT NOT NULL,
	checksum VARCHAR(80),
	state VARCHAR(32) NOT NULL,
	created_at DATETIME(6) NOT NULL,
	started_at DATETIME(6),
	finished_at DATETIME(6),
	error TEXT,
	plan_id VARCHAR(32),
	image_id INTEGER,
	filter VARCHAR(32),
	source_node VARCHAR(128),
	destination_partition VARCHAR(128),
	destination_path VARCHAR(1024),
	reserved_bytes BIGINT NOT NULL,
	node_checksum VARCHAR(80),
	attempts INTEGER NOT NULL,
	updated_at DATETIME(6),
	CONSTRAINT pk_transfer PRIMARY KEY (id),
	CONSTRAINT fk_transfer_image_id_image FOREIGN KEY(image_id) REFERENCES image (id) ON DELETE SET NULL
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

CREATE INDEX ix_transfer_destination_node_state ON transfer (destination_node, state);
CREATE INDEX ix_transfer_plan_id ON transfer (plan_id);
CREATE INDEX ix_transfer_runid ON transfer (runid);
CREATE INDEX ix_transfer_state ON transfer (state);

CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL,
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;
INSERT INTO alembic_version (version_num) VALUES ('0008');
